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

# Matched against one whitespace-separated word at a time, so the work is
# linear in the text whatever it holds.
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
TRIM = "<>()[]{}\"',.;:!?"


def max_items():
    text = config.get("max_items") or "10"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise Err(types.ReasoningError_Failed(f"config `max_items` must be a positive integer, not `{text}`"))
    return value


class Reasoner(exports.Reasoner):
    def reason(self, request: types.ReasonRequest) -> types.ReasonResponse:
        try:
            value = json.loads(request.input)
        except ValueError as error:
            raise Err(types.ReasoningError_InvalidInput(f"input is not JSON: {error}"))
        text = value.get("text") if isinstance(value, dict) else None
        if not isinstance(text, str):
            raise Err(types.ReasoningError_InvalidInput('send {"text": "..."}'))
        limit = max_items()
        emails, links, seen = [], [], set()
        for word in text.split():
            word = word.strip(TRIM)
            if word.startswith(("http://", "https://")):
                found = links
            elif "@" in word and EMAIL.fullmatch(word):
                found = emails
            else:
                continue
            if word not in seen and len(found) < limit:
                seen.add(word)
                found.append(word)
        log.log(log.Level.INFO, "found contacts", [("emails", str(len(emails))), ("links", str(len(links)))])
        return types.ReasonResponse(
            output=json.dumps({"emails": emails, "links": links}),
            confidence=None,
            notes=[f"{len(emails)} email(s), {len(links)} link(s)"],
        )
