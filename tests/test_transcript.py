"""The ticket transcript renders every history message type."""

from providers.rendering import render_payload, transcript_render


def test_every_type_is_rendered():
    rendered = {
        kind: render_payload(kind, payload)
        for kind, payload in {
            "text": {"text": " hi\r\nthere "},
            "markdown": {"markdown": "**b**"},
            "image": {"imageUrl": "https://x/i.png", "title": "pic"},
            "audio": {"audioUrl": "https://x/a.mp3"},
            "video": {"videoUrl": "https://x/v.mp4"},
            "file": {"fileUrl": "https://x/f.pdf", "title": "doc"},
            "location": {"latitude": 1.5, "longitude": -2, "address": "1 Main St", "title": "Shop"},
            "choice": {"text": "Pick", "options": [{"label": "A", "value": "a"}]},
            "dropdown": {"text": "Pick", "options": [{"label": "B", "value": "b"}]},
            "card": {
                "title": "T",
                "subtitle": "S",
                "actions": [{"action": "url", "label": "Go", "value": "https://g"}],
            },
            "carousel": {"items": [{"title": "C1", "actions": []}, {"title": "C2", "actions": []}]},
            "bloc": {
                "items": [
                    {"type": "text", "payload": {"text": "x"}},
                    {"type": "image", "payload": {"imageUrl": "https://x/j.png"}},
                ]
            },
        }.items()
    }
    assert rendered["text"] == "hi\nthere"
    assert rendered["image"] == "[ Image: pic ] https://x/i.png"
    assert rendered["file"] == "[ File: doc ] https://x/f.pdf"
    assert "1 Main St" in rendered["location"] and "1.5, -2" in rendered["location"]
    assert '"A" (a)' in rendered["choice"] and '"B" (b)' in rendered["dropdown"]
    assert 'Card: "T"' in rendered["card"] and "Go (url: https://g)" in rendered["card"]
    assert "C1" in rendered["carousel"] and "C2" in rendered["carousel"]
    assert rendered["bloc"] == "x\n[ Image ] https://x/j.png"


def test_layout_names_each_author():
    history = [
        {"source": {"type": "user", "userId": "u1"}, "type": "text", "payload": {"text": "hello"}},
        {"source": {"type": "bot"}, "type": "text", "payload": {"text": "hi"}},
    ]
    text = transcript_render(history, user_name={"u1": "Ada"}.get, bot_name="Helper")
    assert text == "👤 Ada:\nhello\n\n---\n\n🤖 Helper:\nhi"
