"""JSON Schema of a DRF serializer, for the integration definition Botpress reads.

Written for the serializers of ``contract`` and the providers' entities: the field types they
use, nested serializers, lists, and ``TypedPayloadSerializer`` (one variant per type).
"""

from __future__ import annotations

from rest_framework import serializers

from sessions_app.api.contract import TypedPayloadSerializer


def serializer_schema(serializer: serializers.Serializer | type[serializers.Serializer]) -> dict:
    """``{"type": "object", "properties", "required"}`` of a serializer (class or instance)."""
    instance = serializer() if isinstance(serializer, type) else serializer
    if isinstance(instance, TypedPayloadSerializer):
        return _typed_schema(instance)
    return _object_schema(instance.fields)


def _object_schema(fields: dict) -> dict:
    properties = {name: field_schema(field) for name, field in fields.items() if not field.read_only}
    required = [name for name, field in fields.items() if field.required and not field.read_only]
    schema: dict = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _typed_schema(instance: TypedPayloadSerializer) -> dict:
    """One variant per ``type``: its payload schema, plus the serializer's other fields."""
    common = {name: field for name, field in instance.fields.items() if name not in ("type", "payload")}
    variants = []
    for kind, payload in instance.PAYLOADS.items():
        variant = _object_schema(common)
        variant["properties"] = {
            "type": {"type": "string", "const": kind},
            "payload": serializer_schema(payload),
            **variant["properties"],
        }
        variant["required"] = ["type", "payload", *variant.get("required", [])]
        variants.append(variant)
    return {"oneOf": variants}


def field_schema(field: serializers.Field) -> dict:
    schema = _type_schema(field)
    if field.help_text:
        schema["description"] = str(field.help_text)
    return schema


def _type_schema(field: serializers.Field) -> dict:
    if isinstance(field, serializers.ListSerializer):
        schema = {"type": "array", "items": serializer_schema(field.child)}
        if not field.allow_empty:
            schema["minItems"] = 1
        return schema
    if isinstance(field, serializers.Serializer):
        return serializer_schema(field)
    if isinstance(field, serializers.ChoiceField):
        return {"type": "string", "enum": [str(choice) for choice in field.choices]}
    if isinstance(field, serializers.CharField):
        return _string_schema(field)
    if isinstance(field, serializers.BooleanField):
        return {"type": "boolean"}
    if isinstance(field, serializers.IntegerField | serializers.FloatField):
        schema = {"type": "integer" if isinstance(field, serializers.IntegerField) else "number"}
        if field.min_value is not None:
            schema["minimum"] = field.min_value
        if field.max_value is not None:
            schema["maximum"] = field.max_value
        return schema
    if isinstance(field, serializers.DictField):
        child = field.child
        return {"type": "object", "additionalProperties": {} if _unvalidated(child) else field_schema(child)}
    if isinstance(field, serializers.ListField):
        return {"type": "array", "items": {} if _unvalidated(field.child) else field_schema(field.child)}
    return {}


def _unvalidated(field: serializers.Field) -> bool:
    return type(field).__name__ == "_UnvalidatedField"


def _string_schema(field: serializers.CharField) -> dict:
    schema: dict = {"type": "string"}
    if isinstance(field, serializers.EmailField):
        schema["format"] = "email"
    elif isinstance(field, serializers.URLField):
        schema["format"] = "uri"
    elif isinstance(field, serializers.RegexField):
        pattern = next((v.regex.pattern for v in field.validators if hasattr(v, "regex")), None)
        if pattern:
            schema["pattern"] = pattern
    min_length = field.min_length if field.min_length is not None else (0 if field.allow_blank else 1)
    if min_length:
        schema["minLength"] = min_length
    if field.max_length is not None:
        schema["maxLength"] = field.max_length
    return schema
