#!/usr/bin/env bash
# Pastes `workbench list --reference` between the README's recipe-reference markers
# (RegistryTests fails until the README holds the reference the code makes).
set -euo pipefail
cd "$(dirname "$0")/.."
reference=$(mktemp)
.build/release/workbench list --reference > "$reference"
python3 - "$reference" <<'PY'
import sys
begin, end = "<!-- recipe reference:", "<!-- end of the recipe reference -->"
text = open("README.md").read()
i, j = text.index(begin), text.index(end) + len(end)
open("README.md", "w").write(text[:i] + open(sys.argv[1]).read().rstrip("\n") + text[j:])
PY
rm -f "$reference"
