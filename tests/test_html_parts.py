"""Help-desk HTML to Markdown text and media parts, and Zendesk's comment shapes (pure functions)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.base import MessagePart
from providers.html_parts import html_to_parts, html_to_text, media_kind
from providers.zendesk.webhooks import comment_parts, comment_text

IMG = "https://acme.zendesk.test/attachments/token/AbC123/?name=screenshot.png"


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        (
            '<p>See <a href="https://help.example.test/a/1">this article</a></p>',
            "See [this article](https://help.example.test/a/1)",
        ),
        ('<p>Open <a href="https://x.test/page">https://x.test/page</a>.</p>', "Open https://x.test/page."),
        ('<a href="https://x.test/">x.test</a>', "https://x.test/"),
        ('<a href="mailto:help@acme.test">help@acme.test</a>', "mailto:help@acme.test"),
        ('<a href="javascript:alert(1)">click</a>', "click"),
        ('<a href="https://x.test/a(1)">see [1]</a>', "[see \\[1\\]](https://x.test/a%281%29)"),
        ("<style>p{margin:0}</style><p>Styled reply</p>", "Styled reply"),
        ("<script>alert('x')</script><p>Safe</p><!-- internal note -->", "Safe"),
        ("<head><title>T</title></head><body><p>Body</p></body>", "Body"),
        ("<ul><li>one</li><li>two</li></ul>", "- one\n- two"),
        ("<ol><li>first</li><li>second<ul><li>nested</li></ul></li></ol>", "1. first\n2. second\n  - nested"),
        ("<p>a</p><p>b</p>", "a\n\nb"),
        ("line 1<br>line 2<br><br>line 3", "line 1\nline 2\n\nline 3"),
        ("<div>x</div><div>y</div>", "x\ny"),
        ("<p>&amp;lt;b&amp;gt; is escaped &lt;b&gt;</p>", "&lt;b&gt; is escaped <b>"),
        ("<p>caf&eacute; &#8364;5 &nbsp;!</p>", "café €5 \xa0!"),
        ("<p>  lots   of\n   space </p>", "lots of space"),
        ("<pre>def f():\n    return 1</pre>", "def f():\n    return 1"),
        ("plain text\nwith a line break", "plain text\nwith a line break"),
        ("<p>unclosed <b>bold", "unclosed bold"),
        ("", ""),
    ],
)
def test_html_to_text(markup, text):
    assert html_to_text(markup) == text


def test_images_split_the_text_in_the_agents_order():
    parts = html_to_parts(f'<p>Before</p><p><img src="{IMG}" alt="screenshot.png"></p><p>After</p>')
    assert parts == [
        MessagePart(kind="text", text="Before"),
        MessagePart(kind="media", url=IMG, filename="screenshot.png", alt="screenshot.png"),
        MessagePart(kind="text", text="After"),
    ]


def test_images_that_cannot_be_fetched_are_left_out():
    assert html_to_parts('<img src="data:image/png;base64,AAAA"><img src="/relative.png">') == []


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        # Zendesk's legacy shape: dashes, a blank line, "Author, date", then the body.
        ("----------------------------------------------\n\nJane Agent, Mar 3, 2026, 10:04\n\nHello", "Hello"),
        ("<p>------------</p><p>Jane Agent, Mar 3, 2026, 10:04 AM</p><p>Hello</p><p>Bye</p>", "Hello\n\nBye"),
        # ...with the "on behalf of" banner before the author line.
        ("-----\n\n!*** Submitted by Ann on behalf of Bob ***!\n\nAnn, Jan 12, 2025, 9:05\n\nThe body", "The body"),
        ("<p>!*** Submitted on behalf of Bob ***!</p><p>Reply</p>", "Reply"),
        # Without the dashes, a first line that looks like a date header is the agent's text.
        ("<p>Paris, Mar 3, 2026, 10:04</p><p>see you</p>", "Paris, Mar 3, 2026, 10:04\n\nsee you"),
    ],
)
def test_zendesk_comment_shapes_reach_botpress_as_the_body_alone(markup, text):
    assert comment_text(markup) == text


def test_attachments_follow_the_comment_and_inline_ones_are_not_repeated():
    inline = MessagePart(kind="media", url=IMG, filename="screenshot.png")
    pdf = MessagePart(kind="media", url="https://acme.zendesk.test/attachments/token/Zz9/?name=a.pdf", filename="a.pdf")
    parts = comment_parts(f'<p>Hi</p><img src="{IMG}" alt="shot">', attachments=[inline, pdf])
    assert [(p.kind, p.url or p.text) for p in parts] == [("text", "Hi"), ("media", IMG), ("media", pdf.url)]


@pytest.mark.parametrize(
    ("content_type", "filename", "kind"),
    [
        ("image/png", "x.bin", "image"),
        ("audio/mpeg", "", "audio"),
        ("video/mp4; codecs=avc1", "", "video"),
        ("application/pdf", "x.png", "file"),
        ("", "photo.JPG", "image"),
        ("application/octet-stream", "clip.mp4", "video"),
        ("", "notes", "file"),
    ],
)
def test_media_kind(content_type, filename, kind):
    assert media_kind(content_type, filename) == kind


# --- properties -----------------------------------------------------------------------------
TAGS = ["p", "div", "span", "b", "i", "ul", "ol", "li", "a", "br", "pre", "table", "tr", "td", "h1", "blockquote"]
words = st.text(alphabet=st.characters(blacklist_characters="<>&", blacklist_categories=("Cs",)), max_size=20)


@st.composite
def html_fragments(draw, depth=0):
    pieces = []
    for _ in range(draw(st.integers(0, 4))):
        choice = draw(st.integers(0, 5 if depth < 4 else 1))
        if choice <= 1:
            pieces.append(draw(words))
        elif choice == 2:
            pieces.append(f"<style>{draw(words)} p{{color:red}}</style><script>var leak = 1;</script><!-- hidden -->")
        elif choice == 3:
            pieces.append(
                f'<img src="https://img.test/{draw(st.integers(0, 9))}.png" alt="{draw(words).replace(chr(34), "")}">'
            )
        else:
            tag = draw(st.sampled_from(TAGS))
            attrs = ' href="https://x.test/p"' if tag == "a" else ""
            pieces.append(f"<{tag}{attrs}>{draw(html_fragments(depth=depth + 1))}</{tag}>")
    return "".join(pieces)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_converts_without_error(markup):
    for part in html_to_parts(markup):
        assert part.kind in ("text", "media")
        assert part.kind == "media" or part.text.strip()


@settings(max_examples=300, deadline=None)
@given(html_fragments())
def test_no_tag_style_or_script_text_leaks(markup):
    text = html_to_text(markup)
    assert not re.search(rf"</?(?:{'|'.join(TAGS)}|style|script|img)\b", text)
    assert "color:red" not in text and "var leak" not in text and "hidden" not in text
    assert "\x00" not in text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="<&", blacklist_categories=("Cs",)), max_size=300))
def test_idempotent_on_plain_text(text):
    once = html_to_text(text)
    assert html_to_text(once) == once


def test_deeply_nested_html_is_converted():
    assert html_to_text("<div>" * 5000 + "deep" + "</div>" * 5000) == "deep"
