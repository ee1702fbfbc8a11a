"""The hello reference: a bare WSGI answer served by gunicorn with the gateway's own flags.

What the web tier costs with no Django, no database and no broker: the ceiling any endpoint
of the gateway can reach on this machine, measured in the same run as the gateway's figures.
"""

BODY = b'{"hello": "world"}'


def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]
