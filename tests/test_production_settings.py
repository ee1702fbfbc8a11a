"""Production settings (issue 10, finding 10): https settings from the environment, no default key
in production, a key of its own for the embedded default, `check --deploy` clean with the
README's production environment, and a Content-Security-Policy on the admin.

Settings are read at import, so each case runs Django in a subprocess with exactly the environment
under test (nothing inherited from the test run but PATH).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = "postgres://gateway@db.invalid:5432/gateway"
SHOWN = (
    "DEBUG",
    "SECRET_KEY",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_PROXY_SSL_HEADER",
    "CSRF_TRUSTED_ORIGINS",
)


def _django(code: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    clean = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "hitl_gateway.settings"}
    clean.setdefault("HITL_VAR_DIR", str(tmp_path / "var"))
    clean.setdefault("HITL_ENCRYPTION_KEYS", Fernet.generate_key().decode())  # its own refusal is tested apart
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _settings(env: dict[str, str], tmp_path: Path) -> dict:
    code = (
        "import json; from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {SHOWN!r}}}))"
    )
    result = _django(code, env, tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    for env in ({"DATABASE_URL": POSTGRES}, {"DATABASE_URL": POSTGRES, "DJANGO_SECRET_KEY": ""}):
        result = _django("from django.conf import settings; settings.SECRET_KEY", env, tmp_path)
        assert result.returncode != 0
        assert "ImproperlyConfigured" in result.stderr and "DJANGO_SECRET_KEY is not set" in result.stderr


def test_production_refuses_the_built_in_key_even_on_sqlite(tmp_path):
    from hitl_gateway.settings import INSECURE_SECRET_KEY

    result = _django(
        "from django.conf import settings; settings.SECRET_KEY", {"DJANGO_SECRET_KEY": INSECURE_SECRET_KEY}, tmp_path
    )
    assert result.returncode != 0 and "built-in insecure default" in result.stderr
    # DEBUG on (a developer's laptop) may use it.
    debug = _settings({"DJANGO_SECRET_KEY": INSECURE_SECRET_KEY, "DJANGO_DEBUG": "true"}, tmp_path)
    assert debug["SECRET_KEY"] == INSECURE_SECRET_KEY


def test_the_embedded_default_makes_its_key_once_and_keeps_it_private(tmp_path):
    first = _settings({}, tmp_path)
    key_file = tmp_path / "var" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first["SECRET_KEY"] == key_file.read_text().strip() and len(first["SECRET_KEY"]) >= 50
    assert _settings({}, tmp_path)["SECRET_KEY"] == first["SECRET_KEY"]  # kept across restarts
    other = tmp_path / "other"
    assert _settings({"HITL_VAR_DIR": str(other)}, tmp_path)["SECRET_KEY"] != first["SECRET_KEY"]
    # Plain http on loopback: no https redirect, no secure-only cookies.
    assert not first["SECURE_SSL_REDIRECT"] and not first["SESSION_COOKIE_SECURE"]
    assert first["SECURE_HSTS_SECONDS"] == 0


def test_concurrent_first_starts_agree_on_one_key(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from hitl_gateway.local_keys import local_key

    path = tmp_path / "keys" / "secret_key"
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _n: local_key(path), range(16)))
    assert len(keys) == 1 and list(path.parent.iterdir()) == [path]


def test_production_defaults_are_https_and_the_environment_overrides_them(tmp_path):
    key = secrets.token_urlsafe(50)
    production = _settings(
        {"DATABASE_URL": POSTGRES, "DJANGO_SECRET_KEY": key, "HITL_PUBLIC_BASE_URL": "https://hitl.example.com"},
        tmp_path,
    )
    assert (
        production["SECURE_SSL_REDIRECT"] and production["SESSION_COOKIE_SECURE"] and production["CSRF_COOKIE_SECURE"]
    )
    assert production["SECURE_HSTS_SECONDS"] == 31536000
    assert production["SECURE_HSTS_INCLUDE_SUBDOMAINS"] and production["SECURE_HSTS_PRELOAD"]
    assert production["SECURE_PROXY_SSL_HEADER"] is None  # never trusted unless told
    assert production["CSRF_TRUSTED_ORIGINS"] == ["https://hitl.example.com"]
    overridden = _settings(
        {
            "DATABASE_URL": POSTGRES,
            "DJANGO_SECRET_KEY": key,
            "DJANGO_SECURE_SSL_REDIRECT": "false",
            "DJANGO_SECURE_HSTS_SECONDS": "600",
            "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "false",
            "DJANGO_SECURE_HSTS_PRELOAD": "false",
            "DJANGO_SESSION_COOKIE_SECURE": "false",
            "DJANGO_CSRF_COOKIE_SECURE": "false",
            "DJANGO_SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
            "DJANGO_CSRF_TRUSTED_ORIGINS": "https://a.example.com,https://b.example.com",
        },
        tmp_path,
    )
    assert overridden["SECURE_HSTS_SECONDS"] == 600
    assert not any(overridden[name] for name in SHOWN[2:8] if name != "SECURE_HSTS_SECONDS")
    assert overridden["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert overridden["CSRF_TRUSTED_ORIGINS"] == ["https://a.example.com", "https://b.example.com"]


def readme_production_env() -> dict[str, str]:
    """The ``NAME=value`` lines of the README's "Production settings" block; ``<...>`` are made up."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Production settings", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    env = {}
    for line in block.splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(\S+)", line.strip())
        if match:
            name, value = match.groups()
            if value.startswith("<"):  # made up: a Fernet key where one is asked for
                value = Fernet.generate_key().decode() if "Fernet" in line else secrets.token_urlsafe(50)
            env[name] = value
    return env


def test_check_deploy_is_clean_with_the_readme_s_production_environment(tmp_path):
    env = readme_production_env()
    assert {"DJANGO_SECRET_KEY", "DATABASE_URL", "DJANGO_ALLOWED_HOSTS"} <= set(env)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HITL_VAR_DIR": str(tmp_path / "var")} | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


# --- the Content-Security-Policy, and what the admin pages load under it --------------------------------
def test_admin_pages_send_a_content_security_policy(admin_client, client, db):
    from django.contrib.staticfiles import finders

    from tests.test_admin import make_integration, make_session

    integration, _key = make_integration()
    session = make_session(integration, 1)
    pages = [
        "/admin/",
        "/admin/sessions_app/hitlsession/",
        "/admin/sessions_app/hitlsession/dashboard/",
        f"/admin/sessions_app/hitlsession/{session.pk}/change/",
        f"/admin/sessions_app/hitlsession/{session.pk}/close/",
        "/admin/sessions_app/integration/",
        f"/admin/sessions_app/integration/{integration.pk}/change/",
        "/admin/sessions_app/integration/add/",
    ]
    for path in ["/admin/login/", *pages]:
        response = (client if path == "/admin/login/" else admin_client).get(path)
        assert response.status_code == 200, path
        policy = dict(
            part.strip().split(" ", 1)
            for part in response.headers["Content-Security-Policy"].split(";")
            if part.strip()
        )
        content = response.content.decode()
        nonce = re.search(r"'nonce-([^']+)'", policy["script-src"])
        allowed = f"'self' 'nonce-{nonce.group(1)}'" if nonce else "'self'"
        assert policy["script-src"] == allowed and policy["style-src"] == allowed
        assert policy["img-src"] == "'self' data:" and policy["frame-ancestors"] == "'none'"
        assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"
        # Nothing the policy would block: an inline script or style only with the page's nonce,
        # no style attribute, no inline event handler.
        inline = re.findall(r"<(?:script(?![^>]*\ssrc=)|style)\b[^>]*>", content)
        assert all(nonce and f'nonce="{nonce.group(1)}"' in tag for tag in inline), (path, inline)
        assert not re.search(r"<[^>]+\s(?:style|on[a-z]+)=", content), path
        for stylesheet in re.findall(r'<link rel="stylesheet" href="/static/([^"]+)"', content):
            assert finders.find(stylesheet), stylesheet
