from django.urls import path

from sessions_app.api import definition, lifecycle, views

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
    # The same, under the integration's own names (botpress_names).
    path(
        "integrations/<str:integration_id>/actions/<str:action>",
        views.RenamedActionApi.as_view(),
        name="renamedAction",
    ),
    path(
        "integrations/<str:integration_id>/channels/<str:channel>/messages",
        views.RenamedChannelMessageApi.as_view(),
        name="renamedChannelMessage",
    ),
    path("integrations/<str:integration_id>/definition", definition.DefinitionApi.as_view(), name="definition"),
    path(
        "integrations/<str:integration_id>/botpress",
        definition.BotpressConnectionApi.as_view(),
        name="botpressConnection",
    ),
    path(
        "integrations/<str:integration_id>/botpress/url-secret",
        definition.BotpressUrlSecretApi.as_view(),
        name="botpressUrlSecret",
    ),
    path("integrations/<str:integration_id>/lifecycle", lifecycle.LifecyclePolicyApi.as_view(), name="lifecyclePolicy"),
]
