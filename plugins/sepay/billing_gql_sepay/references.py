"""Payment references: making them (readable over the phone) and finding them in a memo.

A reference is ``REFERENCE_PREFIX`` (2–5 letters, SePay's "payment code structure" prefix)
followed by ``REFERENCE_LENGTH`` characters from :data:`ALPHABET`: upper-case letters and digits
without the look-alikes 0/O and 1/I, so it survives being read aloud, copied by hand or typed on
a phone keyboard. The core stores it under a unique constraint (case-insensitively) and asks
again on a collision.

Finding one is defensive, because the memo goes through the buyer's banking app and both banks
before SePay sees it: the memo may be lower-cased, have its spaces stripped, be glued to other
text (``MBVCB.123.BGK7M2QX9A.CT tu ...``) or carry the reference split by a space or a dash.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

__all__ = [
    "ALPHABET",
    "MAX_LENGTH",
    "MIN_LENGTH",
    "ReferenceFormat",
]

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
"""32 symbols: digits 2–9 and the letters but I and O (no 0/O or 1/I to confuse)."""

MIN_LENGTH = 6
"""Shortest suffix allowed: 32⁶ ≈ 10⁹ references keep collisions (and lucky guesses) rare."""
MAX_LENGTH = 30
"""Longest suffix SePay's payment-code structures accept."""

_PREFIX = re.compile(r"[A-Za-z]{2,5}")
_SEPARATORS = re.compile(r"[^A-Z0-9]+")


@dataclass(frozen=True)
class ReferenceFormat:
    """The configured shape of our references."""

    prefix: str
    length: int

    @classmethod
    def build(cls, prefix: str, length: int) -> ReferenceFormat:
        """Validate the settings; ``ValueError`` names what is wrong."""
        text = prefix.strip()
        if not _PREFIX.fullmatch(text):
            raise ValueError(
                f"BILLING_GQL_SEPAY_REFERENCE_PREFIX must be 2-5 letters (A-Z), got {prefix!r}"
            )
        if not MIN_LENGTH <= length <= MAX_LENGTH:
            raise ValueError(
                f"BILLING_GQL_SEPAY_REFERENCE_LENGTH must be between {MIN_LENGTH} and "
                f"{MAX_LENGTH}, got {length}"
            )
        return cls(text.upper(), length)

    def new(self) -> str:
        """A fresh random reference (the core makes sure it is unused)."""
        return self.prefix + "".join(secrets.choice(ALPHABET) for _ in range(self.length))

    # -- finding ---------------------------------------------------------------------------

    @property
    def _symbol(self) -> str:
        return f"[{ALPHABET}]"

    def _token(self) -> re.Pattern[str]:
        # A whole token: nothing alphanumeric on either side. Any suffix length SePay allows,
        # so references issued before REFERENCE_LENGTH changed still match.
        return re.compile(
            rf"(?<![A-Z0-9]){self.prefix}({self._symbol}{{{MIN_LENGTH},{MAX_LENGTH}}})(?![A-Z0-9])"
        )

    def _glued(self) -> re.Pattern[str]:
        # Anywhere, exactly our length (overlapping matches through the lookahead).
        return re.compile(rf"(?=({self.prefix}{self._symbol}{{{self.length}}}))")

    def find(self, text: str | None) -> str | None:
        """Our reference in a memo, upper-case; ``None`` when there is none.

        Tried in order, the first hit wins:

        1. a whole token of the configured length (``... BGK7M2QX9A thanh toan``);
        2. the configured length glued to text before it but ending a word
           (``CT BGBGK7M2QX9A``, ``NGUYENVANABGK7M2QX9A``);
        3. a whole token of another length (issued before ``REFERENCE_LENGTH`` changed);
        4. the configured length glued on both sides (``CTBGK7M2QX9ATHANHTOAN``);
        5. the same with the memo's separators removed (``BG-K7M2 QX9A``).
        """
        if not text:
            return None
        upper = text.upper()
        tokens = [m.group(0) for m in self._token().finditer(upper)]
        exact = [t for t in tokens if len(t) == len(self.prefix) + self.length]
        if exact:
            return exact[0]
        glued = self._glued_candidates(upper)
        ending = [candidate for candidate, at_boundary in glued if at_boundary]
        if ending:
            return ending[0]
        if tokens:
            return tokens[0]
        if glued:
            return glued[0][0]
        compact = self._glued_candidates(_SEPARATORS.sub("", upper))
        return compact[0][0] if compact else None

    def _glued_candidates(self, upper: str) -> list[tuple[str, bool]]:
        """Every (overlapping) prefix + configured-length run, and whether it ends a word."""
        found = []
        for match in self._glued().finditer(upper):
            candidate = match.group(1)
            end = match.start() + len(candidate)
            found.append((candidate, end == len(upper) or not upper[end].isalnum()))
        return found

    def from_transfer(self, code: str | None, *texts: str | None) -> str | None:
        """The reference of a transfer: SePay's extracted ``code`` when it is one of ours,
        else the first found in ``texts`` (the memo, then the bank's description), else the
        ``code`` as given (a structure configured at SePay that we do not issue: the core
        matches it or keeps the payment unmatched, with the code shown to the admin)."""
        given = code.strip() if isinstance(code, str) else ""
        if given:
            found = self.find(given)
            if found is not None:
                return found
        for text in texts:
            found = self.find(text)
            if found is not None:
                return found
        return given.upper() or None
