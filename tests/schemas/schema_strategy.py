"""Hypothesis strategies that generate every kind of instance a JSON Schema accepts.

hypothesis-jsonschema would do this, but its last release (0.23.1) uses Hypothesis
internals that current Hypothesis no longer has (``'many' object has no attribute
'more'``). The tool schemas use a small subset of JSON Schema; this covers exactly
that subset and refuses any keyword it does not know, so a schema that grows a new
feature fails here loudly instead of being tested with a blind spot.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

#: Keywords that only annotate: they do not change what is valid.
ANNOTATIONS = {"title", "description", "default", "examples"}
#: Keywords this module understands.
KNOWN = ANNOTATIONS | {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "anyOf",
    "enum",
    "const",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "items",
    "minItems",
    "maxItems",
}
#: Longest string or list generated beyond its minimum (the maxima are megabytes).
SPREAD = 40


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    unknown = set(schema) - KNOWN
    if unknown:
        raise NotImplementedError(f"schema keywords this strategy does not know: {sorted(unknown)}")
    if "anyOf" in schema:
        return st.one_of([from_schema(option) for option in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        return _object(schema)
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        return _integer(schema)
    if kind == "number":
        return _number(schema)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        low = schema.get("minItems", 0)
        high = min(schema.get("maxItems", low + SPREAD), low + 5)
        return st.lists(from_schema(schema["items"]), min_size=low, max_size=high)
    raise NotImplementedError(f"schema type {kind!r}")


def _object(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    if schema.get("additionalProperties", True) is not False:
        raise NotImplementedError("objects that allow additional properties")
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    return st.fixed_dictionaries(
        {name: from_schema(sub) for name, sub in properties.items() if name in required},
        optional={name: from_schema(sub) for name, sub in properties.items() if name not in required},
    )


def _string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low = schema.get("minLength", 0)
    high = schema.get("maxLength")
    if "pattern" in schema:
        # fullmatch: a generated "<64 hex>\n" would satisfy Python's "$" but no length.
        base = st.from_regex(schema["pattern"], fullmatch=True)
        return base.filter(lambda s: len(s) >= low and (high is None or len(s) <= high))
    return st.text(min_size=low, max_size=min(high if high is not None else low + SPREAD, low + SPREAD))


def _bounds(schema: dict[str, Any]) -> tuple[Any, Any, bool, bool]:
    low, high = schema.get("minimum"), schema.get("maximum")
    exclude_low = exclude_high = False
    if "exclusiveMinimum" in schema:
        low, exclude_low = schema["exclusiveMinimum"], True
    if "exclusiveMaximum" in schema:
        high, exclude_high = schema["exclusiveMaximum"], True
    return low, high, exclude_low, exclude_high


def _integer(schema: dict[str, Any]) -> st.SearchStrategy[int | float]:
    low, high, exclude_low, exclude_high = _bounds(schema)
    if low is not None and exclude_low:
        low += 1
    if high is not None and exclude_high:
        high -= 1
    ints = st.integers(min_value=low, max_value=high)
    # JSON Schema's integer is any number without a fractional part: 5.0 too.
    integral_floats = ints.filter(lambda i: abs(i) <= 2**53).map(float)
    edges = [v for v in (low, high) if v is not None]
    return ints | integral_floats | (st.sampled_from(edges) if edges else st.nothing())


def _number(schema: dict[str, Any]) -> st.SearchStrategy[int | float]:
    low, high, exclude_low, exclude_high = _bounds(schema)
    floats = st.floats(
        min_value=low,
        max_value=high,
        exclude_min=exclude_low,
        exclude_max=exclude_high,
        allow_nan=False,
        allow_infinity=False,
    )
    int_low = None if low is None else (int(low) + 1 if exclude_low or low != int(low) else int(low))
    int_high = None if high is None else (int(high) - 1 if exclude_high and high == int(high) else int(high))
    return floats | st.integers(min_value=int_low, max_value=int_high)
