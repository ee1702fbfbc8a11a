from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from health_check.views import HealthCheckView

from sessions_app.api.views import helpdesk_webhook

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("sessions_app.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("webhooks/<slug:provider>/<str:integration_id>/", helpdesk_webhook, name="helpdesk-webhook"),
    path("health/", HealthCheckView.as_view(checks=["health_check.checks.Database"]), name="health"),
    path("", include("django_prometheus.urls")),
]
