"""Checks a pipeline's JSON against the models of Microsoft's Python SDK for Data Factory.

`PipelineResource.deserialize` alone accepts far too much: every activity model keeps
unknown keys as `additional_properties`, and an unknown activity type falls back to the
base class. So besides deserializing (and the SDK's own `validate()`), this walks the raw
JSON against each model's `_attribute_map` and `_validation`, recursively through nested
activities (Until, ForEach, IfCondition, Switch), and reports:

- a key the model does not know (a misspelt property), with the nearest known names;
- an activity (or secret, or other polymorphic) `type` the model does not know;
- a required property that is missing;
- a value of the wrong JSON type, or outside its enumeration (`method`, `dependencyConditions`,
  parameter types, ...; case-insensitive like the SDK's enums);
- an expression that does not parse or calls an unknown function, and references to
  activities, parameters or variables the pipeline does not declare;
- dependsOn naming an activity that is not a sibling, and duplicate activity names.

It needs `azure-mgmt-datafactory` below 10: from 10 on, nested activities deserialize as the
base `Activity` class.
"""

from __future__ import annotations

import difflib
import enum
import inspect
import re
from typing import Any, Iterator

from azure.mgmt.datafactory import models as M
from azure.mgmt.datafactory._utils.serialization import Serializer

import adf_expr

_BASIC = {"str": str, "int": int, "bool": bool, "float": (int, float)}


def _flat_subtypes(cls: type) -> dict[str, type]:
    """Every concrete discriminator value below `cls`, with its class."""
    out: dict[str, type] = {}
    own = cls.__dict__.get("_subtype_map") or {}
    for value, name in own.get("type", {}).items():
        sub = getattr(M, name)
        if sub is cls:
            continue
        if sub.__dict__.get("_subtype_map"):
            out.update(_flat_subtypes(sub))
        else:
            out[value] = sub
    return out


def _is_polymorphic(cls: type) -> bool:
    return bool(cls.__dict__.get("_subtype_map"))


def _enum_of(cls: type, attr: str) -> type | None:
    try:
        annotation = inspect.signature(cls.__init__).parameters[attr].annotation
    except (KeyError, ValueError):
        return None
    for name in re.findall(r"_models\.(\w+)", str(annotation)):
        candidate = getattr(M, name, None)
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate
    return None


class Checker:
    def __init__(self, doc: dict[str, Any]):
        self.doc = doc
        self.errors: list[str] = []
        props = doc.get("properties") if isinstance(doc, dict) else None
        props = props if isinstance(props, dict) else {}
        self.parameters = set((props.get("parameters") or {}).keys())
        self.variables = set((props.get("variables") or {}).keys())
        self.activity_names = {a.get("name") for a in _all_activities(props.get("activities") or [])}

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    # The raw JSON against one model class.
    def model(self, cls: type, raw: Any, path: str) -> None:
        if not isinstance(raw, dict):
            self.error(path, f"expected an object ({cls.__name__}), got {type(raw).__name__}")
            return
        if _is_polymorphic(cls):
            subtypes = _flat_subtypes(cls)
            kind = raw.get("type")
            if kind not in subtypes:
                close = difflib.get_close_matches(str(kind), list(subtypes), n=3)
                self.error(path, f"unknown {cls.__name__} type {kind!r}" + (f"; did you mean {close}?" if close else ""))
                return
            cls = subtypes[kind]
        tree: dict[str, Any] = {}
        for attr, spec in cls._attribute_map.items():
            if not spec["key"]:
                continue  # additional_properties: not accepted here, see the module's doc
            node = tree
            parts = [p.replace("\\.", ".") for p in re.split(r"(?<!\\)\.", spec["key"])]
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = (attr, spec["type"])
        self._object(cls, tree, raw, path)
        for attr, rules in getattr(cls, "_validation", {}).items():
            key = cls._attribute_map[attr]["key"]
            node: Any = raw
            for part in re.split(r"(?<!\\)\.", key):
                node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                if rules.get("required"):
                    self.error(path, f"required property {key!r} of {cls.__name__} is missing")
                continue
            # The SDK's own rules (minimum, maximum, pattern, ...), as its serializer applies
            # them; an expression object is checked by the service at run time instead.
            for rule, limit in rules.items():
                check = Serializer.validation.get(rule)
                if check is None or adf_expr.is_expression_object(node) or isinstance(node, bool):
                    continue
                try:
                    broken = check(node, limit)
                except TypeError:
                    continue
                if broken:
                    self.error(f"{path}.{key}", f"breaks the SDK's rule {rule}={limit!r}: {node!r}")

    def _object(self, cls: type, tree: dict[str, Any], raw: dict[str, Any], path: str) -> None:
        for key, value in raw.items():
            sub = f"{path}.{key}"
            if key not in tree:
                close = difflib.get_close_matches(key, list(tree), n=3)
                self.error(sub, f"unknown property of {cls.__name__}" + (f"; did you mean {close}?" if close else ""))
                continue
            target = tree[key]
            if isinstance(target, dict):
                if not isinstance(value, dict):
                    self.error(sub, "expected an object")
                else:
                    self._object(cls, target, value, sub)
                continue
            attr, typ = target
            self.value(typ, value, sub, enum_cls=_enum_of(cls, attr))

    def value(self, typ: str, value: Any, path: str, enum_cls: type | None = None) -> None:
        if typ.startswith("[") and typ.endswith("]"):
            if not isinstance(value, list):
                self.error(path, f"expected an array ({typ})")
                return
            inner = typ[1:-1]
            if inner == "Activity":
                self.activities(value, path)
                return
            for i, v in enumerate(value):
                self.value(inner, v, f"{path}[{i}]", enum_cls)
            return
        if typ.startswith("{") and typ.endswith("}"):
            if not isinstance(value, dict):
                self.error(path, f"expected an object ({typ})")
                return
            for k, v in value.items():
                self.value(typ[1:-1], v, f"{path}.{k}", enum_cls)
            return
        if typ == "object":
            self.expressions(value, path)
            return
        if typ in _BASIC:
            if isinstance(value, bool) and typ != "bool" or not isinstance(value, _BASIC[typ]):
                self.error(path, f"expected {typ}, got {type(value).__name__}")
                return
            if enum_cls is not None and isinstance(value, str):
                allowed = [e.value for e in enum_cls]
                if value.lower() not in [a.lower() for a in allowed]:
                    self.error(path, f"{value!r} is not one of {allowed}")
            if typ == "str":
                self.expressions(value, path)
            return
        cls = getattr(M, typ, None)
        if cls is None:
            self.error(path, f"no model for type {typ!r} (checker)")
            return
        if cls is M.Expression:
            self.model(cls, value, path)
            if isinstance(value, dict) and value.get("type") != "Expression":
                self.error(path, "an Expression's type must be 'Expression'")
            if isinstance(value, dict) and isinstance(value.get("value"), str):
                self.expression_text(value["value"], path, whole=True)
            return
        self.model(cls, value, path)

    def activities(self, items: list[Any], path: str) -> None:
        names = [a.get("name") for a in items if isinstance(a, dict)]
        for name in {n for n in names if names.count(n) > 1}:
            self.error(path, f"duplicate activity name {name!r}")
        for i, a in enumerate(items):
            sub = f"{path}[{a.get('name', i) if isinstance(a, dict) else i}]"
            self.model(M.Activity, a, sub)
            for d in (a.get("dependsOn") or []) if isinstance(a, dict) else []:
                if isinstance(d, dict) and d.get("activity") not in names:
                    self.error(sub, f"dependsOn {d.get('activity')!r}, which is not an activity of the same container")

    # Expressions inside values.
    def expressions(self, value: Any, path: str) -> None:
        if adf_expr.is_expression_object(value):
            if not isinstance(value["value"], str):
                self.error(path, "an Expression's value must be a string")
            else:
                self.expression_text(value["value"], path, whole=True)
        elif isinstance(value, dict):
            if value.get("type") == "Expression":
                self.error(path, f"an Expression object has exactly 'value' and 'type', not {sorted(value)}")
            for k, v in value.items():
                self.expressions(v, f"{path}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.expressions(v, f"{path}[{i}]")
        elif isinstance(value, str):
            self.expression_text(value, path, whole=False)

    def expression_text(self, text: str, path: str, whole: bool) -> None:
        try:
            texts = adf_expr.expressions_in(text)
            if whole and not texts:
                self.error(path, f"an Expression holds no expression: {text!r}")
            for t in texts:
                self.references(adf_expr.parse(t), path)
        except adf_expr.ExpressionError as err:
            self.error(path, f"expression: {err}")

    def references(self, tree: Any, path: str) -> None:
        for node in adf_expr.walk(tree):
            if isinstance(node, adf_expr.Call) and node.name in ("activity", "variables"):
                if len(node.args) != 1 or not isinstance(node.args[0], adf_expr.Lit):
                    continue
                name = node.args[0].value
                known = self.activity_names if node.name == "activity" else self.variables
                if name not in known:
                    self.error(path, f"{node.name}({name!r}) names nothing this pipeline declares")
            if (
                isinstance(node, adf_expr.Prop)
                and isinstance(node.key, str)
                and isinstance(node.target, adf_expr.Prop)
                and node.target.key == "parameters"
                and isinstance(node.target.target, adf_expr.Call)
                and node.target.target.name == "pipeline"
                and node.key not in self.parameters
            ):
                close = difflib.get_close_matches(node.key, list(self.parameters), n=3)
                self.error(path, f"pipeline parameter {node.key!r} is not declared" + (f"; did you mean {close}?" if close else ""))


def _all_activities(items: list[Any]) -> Iterator[dict[str, Any]]:
    """Every activity, nested ones included."""
    for a in items:
        if not isinstance(a, dict):
            continue
        yield a
        tp = a.get("typeProperties") or {}
        if not isinstance(tp, dict):
            continue
        for key in ("activities", "ifTrueActivities", "ifFalseActivities", "defaultActivities"):
            if isinstance(tp.get(key), list):
                yield from _all_activities(tp[key])
        for case in tp.get("cases") or []:
            if isinstance(case, dict) and isinstance(case.get("activities"), list):
                yield from _all_activities(case["activities"])


def all_activities(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(_all_activities(doc["properties"]["activities"]))


def check_pipeline(doc: dict[str, Any]) -> list[str]:
    """Every problem found in a `{name, properties}` pipeline document (empty: none)."""
    errors: list[str] = []
    try:
        resource = M.PipelineResource.deserialize(doc)
    except Exception as err:  # the SDK's deserializer raises several kinds
        return [f"the SDK cannot deserialize it: {err}"]
    # Nested activities must come out as their own classes, not the base class.
    for a in _sdk_activities(resource.activities or []):
        if type(a) in (M.Activity, M.ExecutionActivity, M.ControlActivity):
            errors.append(f"activity {a.name!r} deserialized as the base class {type(a).__name__}")
    checker = Checker(doc)
    if not isinstance(doc.get("name"), str) or not doc.get("name"):
        checker.error("$", "a pipeline document needs a name")
    for key in doc:
        if key not in ("name", "properties"):
            checker.error(f"$.{key}", "a pipeline document has only name and properties")
    checker.model(M.PipelineResource, doc, "$")
    return errors + checker.errors


def check_linked_service(doc: dict[str, Any]) -> list[str]:
    """Every problem found in a `{name, properties}` linked service document."""
    try:
        M.LinkedServiceResource.deserialize(doc)
    except Exception as err:
        return [f"the SDK cannot deserialize it: {err}"]
    checker = Checker({"properties": {}})
    for key in doc:
        if key not in ("name", "properties"):
            checker.error(f"$.{key}", "a linked service document has only name and properties")
    checker.model(M.LinkedServiceResource, doc, "$")
    return checker.errors


def _sdk_activities(items: list[Any]) -> Iterator[Any]:
    for a in items:
        yield a
        for attr in ("activities", "if_true_activities", "if_false_activities", "default_activities"):
            yield from _sdk_activities(getattr(a, attr, None) or [])
        for case in getattr(a, "cases", None) or []:
            yield from _sdk_activities(case.activities or [])
