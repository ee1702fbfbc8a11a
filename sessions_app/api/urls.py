from django.urls import path

from sessions_app.api import views

app_name = "api"

urlpatterns = [
    path("integrations/<str:integration_id>/actions/createUser", views.CreateUserApi.as_view(), name="createUser"),
    path("integrations/<str:integration_id>/actions/startHitl", views.StartHitlApi.as_view(), name="startHitl"),
    path("integrations/<str:integration_id>/actions/stopHitl", views.StopHitlApi.as_view(), name="stopHitl"),
    path(
        "integrations/<str:integration_id>/channels/hitl/messages",
        views.ChannelMessageApi.as_view(),
        name="hitlMessage",
    ),
]
