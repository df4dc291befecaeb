"""The OpenAPI schema's error half: one `Error` envelope component every operation references.

A drf-spectacular post-processing hook. Every operation documents the error statuses the
platform answers for any request (400 malformed, 401 unauthenticated, 403 forbidden, 404
unknown, 422 invalid, 429 throttled); operations with a body add 409 (an idempotency key
still in flight), 413 (too large) and 415 (media type or encoding). Statuses an operation
documents itself are kept.

Every plain string a request body takes is documented without NUL characters (`pattern`):
PostgreSQL cannot store one, and the JSON parser refuses it with 400 (`ems.parsers`).
"""

ERROR_COMPONENT = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details", "request_id"],
            "properties": {
                "code": {"type": "string", "description": "machine-readable, e.g. validation_failed"},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["field", "code", "message"],
                        "properties": {
                            "field": {"type": "string"},
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                },
                "request_id": {"type": "string"},
            },
        }
    },
}

ERROR_STATUSES = {
    "400": "Malformed request (unparsable body, a NUL byte in the URL, too deeply nested JSON)",
    "401": "Missing, expired or invalid credentials",
    "403": "The caller may not do this",
    "404": "No such resource (or not the caller's)",
    "405": "Method not allowed (the Allow header lists those that are)",
    "422": "The request is invalid; details name each field",
    "429": "Too many requests; Retry-After says when to try again",
}
BODY_STATUSES = {
    "409": "The same Idempotency-Key is still in flight, or the request conflicts with the current state",
    "413": "The body is larger than the limit",
    "415": "Unsupported media type or Content-Encoding",
}
_BODY_METHODS = {"post", "put", "patch"}


NO_NUL_PATTERN = "^[^\\u0000]*$"


def _strings_without_nul(schema) -> None:
    """Add the NUL refusal to every plain string (no format, enum or pattern of its own) in `schema`."""
    if isinstance(schema, list):
        for item in schema:
            _strings_without_nul(item)
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "string" and not ({"format", "enum", "pattern"} & set(schema)):
        schema["pattern"] = NO_NUL_PATTERN
    for value in schema.values():
        if isinstance(value, dict | list):
            _strings_without_nul(value)


def error_responses_add(result, generator, request, public):
    components = result.setdefault("components", {}).setdefault("schemas", {})
    request_bodies = {
        ref["$ref"].rsplit("/", 1)[-1]
        for methods in result.get("paths", {}).values()
        for operation in methods.values()
        if isinstance(operation, dict)
        for media in operation.get("requestBody", {}).get("content", {}).values()
        for ref in [media.get("schema", {})]
        if "$ref" in ref
    }
    for name in request_bodies:
        _strings_without_nul(components.get(name))
    for methods in result.get("paths", {}).values():
        for operation in methods.values():
            if isinstance(operation, dict):
                for media in operation.get("requestBody", {}).get("content", {}).values():
                    if "$ref" not in media.get("schema", {}):
                        _strings_without_nul(media.get("schema"))
    components["Error"] = ERROR_COMPONENT
    reference = {"$ref": "#/components/schemas/Error"}
    for methods in result.get("paths", {}).values():
        for method, operation in methods.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            statuses = dict(ERROR_STATUSES)
            if method in _BODY_METHODS:
                statuses.update(BODY_STATUSES)
            for status, description in statuses.items():
                operation["responses"].setdefault(
                    status,
                    {"description": description, "content": {"application/json": {"schema": reference}}},
                )
    return result


# What `ems.parsers.StrictJSONParser` refuses in any JSON body (PostgreSQL cannot store it).
NUL_FREE = "^[^\\u0000]*$"


def nul_free_json_bodies(result, generator, request, public):
    """A JSON request body's strings and keys hold no NUL character: the schema says so.

    Each string property of the schemas JSON bodies reference (without a format, pattern or
    enum of its own) gets the pattern, so a client (or a fuzzer) reading the schema sends
    what the API accepts. (OpenAPI 3.0 has no `propertyNames` to say it of extra keys.)"""
    schemas = result.get("components", {}).get("schemas", {})
    seen: set[str] = set()

    def constrain(schema: dict) -> None:
        reference = schema.get("$ref", "")
        if reference:
            name = reference.rsplit("/", 1)[-1]
            if name not in seen and name in schemas:
                seen.add(name)
                constrain(schemas[name])
            return
        if schema.get("type") == "string" and not {"format", "pattern", "enum"} & set(schema):
            schema["pattern"] = NUL_FREE
        if schema.get("type") == "object" or "properties" in schema:
            for child in schema.get("properties", {}).values():
                constrain(child)
        if isinstance(schema.get("items"), dict):
            constrain(schema["items"])

    for methods in result.get("paths", {}).values():
        for operation in methods.values():
            if isinstance(operation, dict):
                body = operation.get("requestBody", {}).get("content", {}).get("application/json")
                if body and "schema" in body:
                    constrain(body["schema"])
    return result
