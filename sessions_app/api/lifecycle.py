"""The integration's lifecycle policy over the API (``GET``/``PATCH .../lifecycle``).

Field names are camelCase like the other integration endpoints; ``null`` turns a timeout off.
Validation beyond types is the service's (``services.lifecycle``), so the admin and the API
refuse the same things.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from sessions_app.api.views import ERRORS, IntegrationApi
from sessions_app.models import LifecyclePolicy
from sessions_app.services.errors import InvalidInput
from sessions_app.services.lifecycle import integration_policy_get, integration_policy_update

MINUTES = {"min_value": 1, "max_value": 525600, "allow_null": True}


class LifecyclePolicySerializer(serializers.Serializer):
    assignmentTimeoutMinutes = serializers.IntegerField(source="assignment_timeout_minutes", **MINUTES)
    assignmentTimeoutMessage = serializers.CharField(
        source="assignment_timeout_message", allow_blank=True, max_length=2000
    )
    assignmentTimeoutKeepTicketOpen = serializers.BooleanField(source="assignment_timeout_keep_ticket_open")
    inactivityTimeoutMinutes = serializers.IntegerField(source="inactivity_timeout_minutes", **MINUTES)
    inactivityTimeoutMessage = serializers.CharField(
        source="inactivity_timeout_message", allow_blank=True, max_length=2000
    )
    inactivityWarningMinutes = serializers.IntegerField(source="inactivity_warning_minutes", **MINUTES)
    inactivityWarningMessage = serializers.CharField(
        source="inactivity_warning_message", allow_blank=True, max_length=2000
    )
    businessHours = serializers.DictField(
        source="business_hours",
        help_text='Weekday → open intervals in the time zone, e.g. {"mon": [["09:00", "17:00"]]}; {} = always open.',
    )
    timeZone = serializers.CharField(source="time_zone", max_length=64, help_text="IANA name, e.g. Europe/Paris.")
    holidays = serializers.ListField(child=serializers.DateField(), max_length=1000)
    outsideHoursMessage = serializers.CharField(source="outside_hours_message", allow_blank=True, max_length=2000)
    outsideHoursClose = serializers.BooleanField(source="outside_hours_close")


CAMEL = {field.source: name for name, field in LifecyclePolicySerializer().fields.items()}


def _policy(policy: LifecyclePolicy) -> dict:
    return LifecyclePolicySerializer(policy).data


class LifecyclePolicyApi(IntegrationApi):
    """When the gateway ends this integration's sessions on its own (see the README)."""

    @extend_schema(operation_id="lifecyclePolicy", responses={200: LifecyclePolicySerializer})
    def get(self, request, integration_id: str):
        return Response(_policy(integration_policy_get(integration=request.auth)))

    @extend_schema(
        operation_id="lifecyclePolicyUpdate",
        request=LifecyclePolicySerializer(partial=True),
        responses={200: LifecyclePolicySerializer, **ERRORS},
    )
    def patch(self, request, integration_id: str):
        data = self.validated(LifecyclePolicySerializer, partial=True)
        if "holidays" in data:
            data["holidays"] = [day.isoformat() for day in data["holidays"]]
        try:
            policy = integration_policy_update(integration=request.auth, changes=data)
        except InvalidInput as exc:  # named as this API names it
            raise InvalidInput(exc.message, field=CAMEL.get(exc.field, exc.field)) from None
        return Response(_policy(policy))
