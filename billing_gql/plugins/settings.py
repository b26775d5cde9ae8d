"""Provider settings: ``BILLING_GQL_<PROVIDER>_<NAME>`` environment variables, read in one place."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

__all__ = ["ProviderSettings", "env_name", "read_provider_settings"]


def env_name(provider: str, name: str) -> str:
    """The variable holding ``name`` for ``provider`` (``BILLING_GQL_STRIPE_API_KEY``)."""
    return f"BILLING_GQL_{provider.upper()}_{name.upper()}"


class ProviderSettings(Mapping[str, str]):
    """A provider's settings by short name (``API_KEY``), with the names of missing ones.

    Its ``repr`` never shows values, so it is safe in logs and tracebacks.
    """

    def __init__(self, provider: str, values: Mapping[str, str], missing: Sequence[str]) -> None:
        self.provider = provider
        self._values = dict(values)
        self.missing = tuple(missing)

    def __getitem__(self, key: str) -> str:
        return self._values[key.upper()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"ProviderSettings({self.provider!r}, names={sorted(self._values)!r})"

    @property
    def configured(self) -> bool:
        """True when every required setting has a value."""
        return not self.missing

    @property
    def reason(self) -> str | None:
        """Why the provider is not configured (names the missing variables), else ``None``."""
        if not self.missing:
            return None
        names = ", ".join(env_name(self.provider, n) for n in self.missing)
        return f"missing {names}"

    def int(self, key: str, default: int) -> int:
        """An integer setting, ``default`` when unset; a malformed value is an error."""
        raw = self.get(key)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{env_name(self.provider, key)} must be an integer") from None


def read_provider_settings(
    provider: str,
    env: Mapping[str, str],
    required: Sequence[str],
    optional: Mapping[str, str | None],
) -> ProviderSettings:
    """Read a provider's settings from ``env``; empty values count as missing."""
    values: dict[str, str] = {}
    missing: list[str] = []
    for name in required:
        value = env.get(env_name(provider, name), "").strip()
        if value:
            values[name.upper()] = value
        else:
            missing.append(name.upper())
    for name, default in optional.items():
        value = env.get(env_name(provider, name), "").strip()
        if value:
            values[name.upper()] = value
        elif default is not None:
            values[name.upper()] = default
    return ProviderSettings(provider, values, missing)
