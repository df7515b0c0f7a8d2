"""An evaluator of identity-based IAM policy documents that follows AWS's rules where moto does not.

moto can enforce IAM but evaluates conditions only in part; the failures that matter for this
project are condition failures (an ``s3:prefix`` condition that a GetObject never satisfies, a
CreateTags allowed only at launch, a RunInstances limited to instance types). Rules implemented,
as AWS documents them for identity policies in one account:

- an explicit Deny wins; otherwise some Allow must match; otherwise the request is implicitly denied;
- a statement matches when its Action (wildcards, case-insensitive) names the action, its Resource
  (``*`` and ``?`` wildcards) names the resource, and every condition holds;
- conditions: every operator must hold; within one, every key must hold; a key holds when any of its
  values matches any of the request's values; a key absent from the request fails the condition
  (unless the operator ends in ``IfExists``; ``Null`` tests presence).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

Context = dict[str, str | list[str]]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _glob(pattern: str, value: str, case_sensitive: bool = True) -> bool:
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, value, 0 if case_sensitive else re.IGNORECASE) is not None


def _operator_holds(operator: str, wanted: dict[str, Any], context: Context) -> bool:
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    for key, values in wanted.items():
        present = _find(context, key)
        if base == "Null":
            expected_null = str(_as_list(values)[0]).lower() == "true"
            if (present is None) != expected_null:
                return False
            continue
        if present is None:
            if if_exists:
                continue
            return False
        actual = _as_list(present)
        if not any(_compare(base, str(w), str(a)) for w in _as_list(values) for a in actual):
            return False
    return True


def _find(context: Context, key: str) -> str | list[str] | None:
    # Condition key names are case-insensitive; their values are not (for String operators).
    for name, value in context.items():
        if name.lower() == key.lower():
            return value
    return None


def _compare(operator: str, wanted: str, actual: str) -> bool:
    if operator in {"StringEquals", "ArnEquals"}:
        return wanted == actual
    if operator == "StringEqualsIgnoreCase":
        return wanted.lower() == actual.lower()
    if operator in {"StringLike", "ArnLike"}:
        return _glob(wanted, actual)
    if operator == "StringNotEquals":
        return wanted != actual
    if operator == "Bool":
        return wanted.lower() == actual.lower()
    raise ValueError(f"condition operator {operator} is not implemented by this evaluator")


def _statement_matches(statement: dict[str, Any], action: str, resource: str, context: Context) -> bool:
    if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in _as_list(statement.get("Action", []))):
        return False
    if not any(_glob(r, resource) for r in _as_list(statement.get("Resource", []))):
        return False
    return all(
        _operator_holds(operator, wanted, context)
        for operator, wanted in statement.get("Condition", {}).items()
    )


def is_allowed(
    policies: list[dict[str, Any]], action: str, resource: str, context: Context | None = None
) -> bool:
    context = context or {}
    statements = [s for policy in policies for s in _as_list(policy["Statement"])]
    if any(s["Effect"] == "Deny" and _statement_matches(s, action, resource, context) for s in statements):
        return False
    return any(
        s["Effect"] == "Allow" and _statement_matches(s, action, resource, context) for s in statements
    )
