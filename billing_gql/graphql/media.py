"""The response media type a GraphQL-over-HTTP request asks for with its ``Accept`` header."""

from __future__ import annotations

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"


def media_type(accept: str | None) -> str | None:
    """The response media type for an Accept header; ``None`` when we can serve none of it."""
    if not accept or not accept.strip():
        return JSON
    best: tuple[float, int, str] | None = None
    for position, part in enumerate(accept.split(",")):
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0].lower()
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        if media == GRAPHQL_RESPONSE:
            chosen = GRAPHQL_RESPONSE
        elif media == JSON:
            chosen = JSON
        elif media in ("*/*", "application/*"):
            # Legacy clients send */*: they understand plain JSON (and its 200 statuses).
            chosen = JSON
        else:
            continue
        candidate = (quality, -position, chosen)
        if best is None or candidate > best:
            best = candidate
    return best[2] if best else None
