# Shell-quoting helpers shared by the launchers (sourced, not run): `--dry-run` prints
# commands that can be pasted into a shell.

# One shell word: as is when safe, else single-quoted (--flag=VALUE: only VALUE).
q() {
  local sq="'"
  if [[ -n $1 && $1 =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then printf '%s' "$1"
  elif [[ $1 =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}"; q "${BASH_REMATCH[2]}"
  else printf "'%s'" "${1//$sq/$sq\\$sq$sq}"; fi
}
qall() { local out=() a; for a in "$@"; do out+=("$(q "$a")"); done; printf '%s\n' "${out[*]}"; }
