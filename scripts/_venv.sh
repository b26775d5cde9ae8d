# Sourced by scripts/*: create .venv if needed and install billing-gql with its first-party
# plugins (editable), quietly. Set BILLING_GQL_VENV to use another virtualenv directory.
VENV="${BILLING_GQL_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
fi
packages=(-e ".[test]")
for plugin in plugins/*/ examples/*/; do
  [ -f "$plugin/pyproject.toml" ] && packages+=(-e "$plugin")
done
"$VENV/bin/python" -m pip install -q "${packages[@]}" >&2
