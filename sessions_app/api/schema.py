"""How the OpenAPI document (drf-spectacular) describes our two kinds of credential.

- ``IntegrationKeyAuthentication``: ``Authorization: Bearer <API key>``, an HTTP bearer scheme.
- ``UrlSecretAuthentication`` (the hitl-api): the secret is a path segment, which OpenAPI has no
  security scheme for; the path parameter ``secret`` documents it, so no scheme is declared.

Registered in ``SessionsAppConfig.ready``; without them drf-spectacular warns on every view
(and ``manage.py check --deploy`` with it).
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object


class IntegrationKeyScheme(OpenApiAuthenticationExtension):
    target_class = "sessions_app.api.auth.IntegrationKeyAuthentication"
    name = "integrationApiKey"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Bearer")


class UrlSecretScheme(OpenApiAuthenticationExtension):
    target_class = "sessions_app.api.hitl_api.UrlSecretAuthentication"
    name = ()  # no security scheme: the credential is the path's ``secret`` segment

    def get_security_requirement(self, auto_schema):
        return None

    def get_security_definition(self, auto_schema):
        return []


def doc_excludes() -> list[type]:
    """drf-spectacular's own list of library classes whose docstrings never describe a component,
    plus our serializers' base: its docstring explains an implementation choice, not a payload
    (``SPECTACULAR_SETTINGS["GET_LIB_DOC_EXCLUDES"]``)."""
    from drf_spectacular.plumbing import get_lib_doc_excludes

    from sessions_app.api.contract import ContractSerializer

    return [*get_lib_doc_excludes(), ContractSerializer]
