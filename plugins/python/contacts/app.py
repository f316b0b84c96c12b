"""contacts: finds the email addresses and web links in a text.

A reasoning plugin written in Python, built into a component with
componentize-py against ../../../wit (see plugins/python/README.md).
Input: {"text": "..."}; output: {"emails": [...], "links": [...]}, each in
order of first appearance, at most `max_items` (plugin config) of each.
"""

import json
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, log, types

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
LINK = re.compile(r"https?://[^\s<>\"')]+")


def first_unique(matches, limit):
    seen = []
    for match in matches:
        if match not in seen:
            seen.append(match)
        if len(seen) == limit:
            break
    return seen


class Reasoner(exports.Reasoner):
    def reason(self, request: types.ReasonRequest) -> types.ReasonResponse:
        try:
            value = json.loads(request.input)
        except ValueError as error:
            raise Err(types.ReasoningError_InvalidInput(f"input is not JSON: {error}"))
        text = value.get("text") if isinstance(value, dict) else None
        if not isinstance(text, str):
            raise Err(types.ReasoningError_InvalidInput('send {"text": "..."}'))
        limit = int(config.get("max_items") or "10")
        emails = first_unique(EMAIL.findall(text), limit)
        links = first_unique((link.rstrip(".,;") for link in LINK.findall(text)), limit)
        log.log(log.Level.INFO, "found contacts", [("emails", str(len(emails))), ("links", str(len(links)))])
        return types.ReasonResponse(
            output=json.dumps({"emails": emails, "links": links}),
            confidence=None,
            notes=[f"{len(emails)} email(s), {len(links)} link(s)"],
        )
