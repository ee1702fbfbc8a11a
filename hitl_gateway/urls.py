from django.contrib import admin
from django.http import HttpResponseRedirect
from django.templatetags.static import static
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView
from health_check.views import HealthCheckView

from hitl_gateway.health import CHECKS as HEALTH_CHECKS
from hitl_gateway.metrics import metrics_view
from sessions_app.api import hitl_api
from sessions_app.api.views import helpdesk_webhook
from sessions_app.api.wire import botpress_wire

# Botpress calls these without credentials: the second segment is the integration's URL secret.
BOTPRESS_BASE = r"(?P<integration_id>[^/]+)/(?P<secret>[^/]+)"
HITL_API = {
    "ping": hitl_api.PingApi,
    "createRemoteUser": hitl_api.CreateRemoteUserApi,
    "createRemoteConversation": hitl_api.CreateRemoteConversationApi,
    "botSendsMessage": hitl_api.BotSendsMessageApi,
    "closeRemoteTicket": hitl_api.CloseRemoteTicketApi,
}


def favicon(request):
    """Browsers ask for /favicon.ico whatever the page says: the console's icon."""
    return HttpResponseRedirect(static("sessions_app/favicon.svg"))


urlpatterns = [
    path("favicon.ico", favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("sessions_app.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("webhooks/<slug:provider>/<str:integration_id>/", helpdesk_webhook, name="helpdesk-webhook"),
    # The integration wire protocol; the SDK ignores the path below the integration's URL.
    re_path(rf"^botpress/{BOTPRESS_BASE}(?:/(?P<subpath>.*))?$", botpress_wire, name="botpress-wire"),
    # Botpress Hub's hitl-api: ``endpointBaseUrl`` + "/ping" etc. (a doubled slash is forgiven).
    *(
        re_path(rf"^hitl-api/{BOTPRESS_BASE}/+{name}$", view.as_view(), name=f"hitl-api-{name}")
        for name, view in HITL_API.items()
    ),
    re_path(rf"^hitl-api/{BOTPRESS_BASE}(?:/(?P<rest>.*))?$", hitl_api.hitl_api_not_found),
    path("health/", HealthCheckView.as_view(checks=HEALTH_CHECKS), name="health"),
    # Generic Django figures (django_prometheus) and the domain's, for a trusted client only.
    path("metrics", metrics_view, name="prometheus-django-metrics"),
]
