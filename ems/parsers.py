"""The API's JSON parser: DRF's, with a nesting limit and no NUL characters.

Python's parser recurses once per level, so a body nested ~1,000 deep raised
`RecursionError` (a 500); PostgreSQL refuses NUL in text, so a string holding `\\u0000`
failed at the first insert. Both are refused here as malformed (400, the error envelope),
before any view reads the body. `API_JSON_MAX_DEPTH` is far above any real body (an
endorsement is two levels deep).
"""

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def json_shape_problem(value, max_depth: int) -> str | None:
    """Why `value` (parsed JSON) is refused, or None: too deep, or a NUL in a string."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
            if any("\x00" in key for key in item):
                return "A key contains a NUL character (\\u0000), which cannot be stored."
        elif isinstance(item, list):
            children = item
        else:
            if isinstance(item, str) and "\x00" in item:
                return "A string contains a NUL character (\\u0000), which cannot be stored."
            continue
        if depth > max_depth:
            return f"The JSON is nested deeper than {max_depth} levels."
        stack.extend((child, depth + 1) for child in children)
    return None


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        max_depth = settings.API_JSON_MAX_DEPTH
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"The JSON is nested deeper than {max_depth} levels.") from None
        problem = json_shape_problem(data, max_depth)
        if problem:
            raise ParseError(problem)
        return data
