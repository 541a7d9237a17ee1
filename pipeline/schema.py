"""YAML documents checked against a JSON schema, with one-line errors that name the file and the key.

Three things plain ``yaml.safe_load`` plus ``jsonschema`` get wrong for a config file:

* a key given twice silently keeps the last value: here it is an error, naming both lines;
* PyYAML follows YAML 1.1, which reads ``1e-3`` and ``1e308`` as strings: here a string that
  reads as a number becomes one wherever the schema wants a number (YAML 1.2's rule);
* ``minimum: 0`` lets NaN through (every comparison with NaN is false): here NaN and infinity
  are refused wherever the schema wants a number;
* YAML aliases (``*name``) repeat a value without copying it, so nine levels of nine aliases
  (a "billion laughs") read in microseconds into 9^9 values, which any walk over the document
  (jsonschema's error message quotes the value) takes hours and gigabytes to expand: here a
  document of more than ``MAX_VALUES`` values, aliases expanded, is refused first, and an error
  quotes a bad value in ``EXCERPT`` characters at most.
"""

from __future__ import annotations

import copy
import functools
import math
import reprlib
from pathlib import Path

import jsonschema
import yaml

MAX_VALUES = 100_000  # in one document, aliases expanded: a grid or a profile holds hundreds
EXCERPT = 200  # characters of a bad value quoted in an error


class SchemaError(ValueError):
    """A document breaks its schema; the message names the file, the key and what is allowed."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with a key given twice."""


class _RepeatedKey(yaml.YAMLError):
    pass


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in first:
            raise _RepeatedKey(f"key {key!r} is given twice (lines {first[key] + 1} and {key_node.start_mark.line + 1})")
        first[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: str | Path, error: type[SchemaError] = SchemaError, what: str = "file") -> dict:
    """The mapping in a YAML file; ``error`` naming the file for a missing file, bad YAML or a repeated key."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such {what}")
    try:
        doc = yaml.load(path.read_text(), Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise error(f"{path}: a {what} must be a mapping of keys, got {type(doc).__name__}")
    return doc


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if ref and ref.startswith("#/"):
        for part in ref[2:].split("/"):
            root = root[part]
        return root
    return schema


def _wants(schema: dict, alternatives: list[dict], kind: str) -> bool:
    return any(kind in ([s["type"]] if isinstance(s.get("type"), str) else s.get("type", [])) for s in [schema, *alternatives])


def _number_types(schema: dict, alternatives: list[dict]) -> set[str]:
    found = set()
    for s in [schema, *alternatives]:
        types = s.get("type", [])
        found |= {"number", "integer"} & set([types] if isinstance(types, str) else types)
    return found


def coerce_numbers(doc, schema: dict, root: dict | None = None):
    """``doc`` with numeric strings made numbers wherever ``schema`` wants a number (YAML 1.2)."""
    root = root or schema
    schema = _resolve(schema, root)
    alternatives = [_resolve(s, root) for s in schema.get("oneOf", []) + schema.get("anyOf", [])]
    if isinstance(doc, str) and doc.lower() in ("true", "false") and _wants(schema, alternatives, "boolean"):
        return doc.lower() == "true"  # `snakemake --config ablations=true` passes the string
    if isinstance(doc, str):
        wanted = _number_types(schema, alternatives)
        try:
            value = float(doc) if wanted else None
        except ValueError:
            return doc
        if value is None:
            return doc
        return int(value) if "integer" in wanted and value.is_integer() else value
    if isinstance(doc, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for s in alternatives:
            props = {**s.get("properties", {}), **props}
        return {
            k: coerce_numbers(v, props[k], root) if k in props else coerce_numbers(v, extra, root) if isinstance(extra, dict) else v
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        items = schema.get("items") or next((s["items"] for s in alternatives if isinstance(s.get("items"), dict)), None)
        return [coerce_numbers(v, items, root) for v in doc] if isinstance(items, dict) else doc
    return doc


def _with_defaults(validator_class):
    """A jsonschema validator that also fills in ``default`` values (the documented recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _non_finite(doc, path=()) -> tuple[tuple, float] | None:
    if isinstance(doc, float) and not math.isfinite(doc):
        return path, doc
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        found = _non_finite(value, (*path, key))
        if found:
            return found
    return None


class _Cycle(Exception):
    pass


def _size(doc, sizes: dict) -> int:
    """Values in ``doc``, a list or mapping counted wherever it appears (an alias expanded); linear
    in the distinct lists and mappings, for ``sizes`` (by id) counts each once."""
    if not isinstance(doc, dict | list):
        return 1
    if id(doc) in sizes:
        if sizes[id(doc)] is None:  # `&a [*a]`: a list inside itself
            raise _Cycle
        return sizes[id(doc)]
    sizes[id(doc)] = None
    sizes[id(doc)] = 1 + sum(_size(v, sizes) for v in (doc.values() if isinstance(doc, dict) else doc))
    return sizes[id(doc)]


def check_size(doc: dict, source: str, error: type[SchemaError] = SchemaError) -> None:
    """``error`` naming the key, before anything walks ``doc``, where its aliases expand it beyond ``MAX_VALUES``."""
    sizes: dict = {}
    try:
        if _size(doc, sizes) <= MAX_VALUES:
            return
    except _Cycle:
        pass

    def weight(value) -> float:  # a list or mapping still being counted holds the cycle
        size = sizes.get(id(value), 1) if isinstance(value, dict | list) else 1
        return math.inf if size is None else size

    path, value = [], doc
    while isinstance(value, dict) and value:  # down to the key that holds the bulk (or the cycle)
        key, value = max(value.items(), key=lambda kv: weight(kv[1]))
        path.append(key)
    found = weight(value)
    count = "a list or mapping inside itself" if found == math.inf else f"{found:,} values"
    raise error(
        f"{source}: key {excerpt('.'.join(map(str, path)) or '(top level)')}: {count} once its YAML aliases (*name) are expanded; "
        f"allowed: at most {MAX_VALUES:,} values in a document: write the values out, or use fewer aliases"
    )


def excerpt(value) -> str:
    """``repr(value)`` in at most ``EXCERPT`` characters, however large or deep the value."""
    try:
        small = _size(value, {}) <= 1_000
    except _Cycle:
        small = False
    text = repr(value) if small else _REPR.repr(value)  # reprlib elides inside lists; it also sorts mappings
    return text if len(text) <= EXCERPT else text[: EXCERPT - 3] + "..."


_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxlong, _REPR.maxother = 3, 8, 8, EXCERPT, EXCERPT, EXCERPT


def validate(doc: dict, schema: dict, source: str, error: type[SchemaError] = SchemaError) -> dict:
    """``doc`` with numbers coerced and defaults filled, or ``error`` describing its first mistake."""
    check_size(doc, source, error)
    doc = coerce_numbers(doc, schema)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        raise error(describe(errors[0], source, schema))
    found = _non_finite(doc)
    if found:
        key = ".".join(map(str, found[0]))
        raise error(f"{source}: key {key!r}: bad value {found[1]}; allowed: a finite number")
    return doc


_NOUNS = {"number": ("a number", "numbers"), "integer": ("an integer", "integers"), "string": ("a string", "strings"),
          "boolean": ("true or false", "booleans"), "null": ("null", "nulls"), "object": ("a mapping", "mappings")}  # fmt: skip


def phrase(schema: dict, root: dict, plural: bool = False) -> str:
    """What a (sub)schema allows, in words: 'a number > 0, a list of them (each once), or null'."""
    schema = _resolve(schema, root)
    if "oneOf" in schema:
        alts = [_resolve(alt, root) for alt in schema["oneOf"]]
        parts = [_list_phrase(alt, root, alts) if alt.get("type") == "array" else phrase(alt, root) for alt in alts]
        return ", ".join(parts[:-1]) + f", or {parts[-1]}" if len(parts) > 1 else parts[0]
    if "enum" in schema:
        return f"{'values of' if plural else 'one of'} {schema['enum']}"
    if "const" in schema:
        return repr(schema["const"])
    types = schema.get("type", [])
    words = " or ".join(_NOUNS.get(t, (t, t))[plural] for t in ([types] if isinstance(types, str) else types)) or "anything"
    bounds = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="))
    return " ".join([words, " and ".join(f"{op} {schema[key]}" for key, op in bounds if key in schema)]).strip()


def _list_phrase(schema: dict, root: dict, siblings: list[dict]) -> str:
    """A list alternative: 'a list of them' where its items are a sibling alternative, else 'a list of numbers > 0'."""
    items = _resolve(schema.get("items", {}), root)
    words = "a list of them" if items in siblings else f"a list of {phrase(items, root, plural=True)}"
    return words + (" (each once)" if schema.get("uniqueItems") else "")


def describe(error: jsonschema.ValidationError, source: str, root: dict | None = None) -> str:
    """One line: file, key path, bad value, what is allowed (``root``: the whole schema, for its $refs)."""
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return f"{source}: unknown key {excerpt('.'.join([*map(str, error.absolute_path), extra[0]]))}; allowed keys: {allowed}"
    if error.validator == "required":
        return f"{source}: {key}: {error.message}"
    allowed = ""
    if error.validator == "oneOf":
        allowed = f"; allowed: {phrase(schema, root or schema)}"
    elif "enum" in schema:
        allowed = f"; allowed: {schema['enum']}"
    elif error.validator in ("minimum", "exclusiveMinimum"):
        allowed = f"; allowed: {'>=' if error.validator == 'minimum' else '>'} {error.validator_value}"
    elif error.validator == "maximum":
        allowed = f"; allowed: <= {error.validator_value}" + (f" ({schema['description']})" if schema.get("description") else "")
    elif error.validator == "minItems":
        allowed = f"; allowed: a list of at least {error.validator_value}"
    elif error.validator == "uniqueItems":
        allowed = "; allowed: each value once"
    elif error.validator == "type":
        allowed = f"; allowed: {phrase(schema, root or schema)}"
    elif error.validator == "pattern":
        allowed = f"; allowed: {schema.get('description') or error.validator_value}"
    return f"{source}: key {excerpt(key)}: bad value {excerpt(error.instance)}{allowed}"


CONFIG_SCHEMA = Path(__file__).with_name("config.schema.yaml")  # shipped with the package, as the grid schema


@functools.cache
def config_schema() -> dict:
    """The workflow config's schema: every setting, its one default and what it means."""
    return yaml.safe_load(CONFIG_SCHEMA.read_text())


def defaults_of(schema: dict) -> dict:
    """The ``default`` of every property of an object schema, nested objects' own properties too."""
    out = {}
    for key, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" in sub:
            out[key] = {**sub.get("default", {}), **defaults_of(sub)}
        elif "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
    return out


def default(*key: str):
    """One setting's default, e.g. ``default("data", "raw")`` (a command line's default)."""
    value = defaults_of(config_schema())
    for k in key:
        value = value[k]
    return value
