#!/usr/bin/env bash
# Make sure the benchmark tools are installed: Postfix's smtp-sink and smtp-source (the
# SMTP receiver and the reference sender of bench/send_campaign.py) and wrk.
# Installs Debian's `postfix` and `wrk` packages when missing, without starting any daemon
# (a policy-rc.d that answers 101 for the duration of the install) and without prompts.
set -eu

missing=()
[ -x /usr/sbin/smtp-sink ] && [ -x /usr/sbin/smtp-source ] || missing+=(postfix)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ "${#missing[@]}" -eq 0 ]; then
  echo "bench tools present: smtp-sink, smtp-source, wrk"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "error: need root to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi

policy=/usr/sbin/policy-rc.d
backup=""
if [ -e "$policy" ]; then
  backup="$(mktemp)"
  $sudo cp -p "$policy" "$backup"
fi
restore() {
  if [ -n "$backup" ]; then
    $sudo cp -p "$backup" "$policy"
    rm -f "$backup"
  else
    $sudo rm -f "$policy"
  fi
}
trap restore EXIT
# 101 = "action not allowed": invoke-rc.d then starts no service during the install.
printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
$sudo chmod 755 "$policy"

echo "installing ${missing[*]} (no daemons started)"
export DEBIAN_FRONTEND=noninteractive
# Postfix asks for a mail configuration; "No configuration" leaves it inert.
echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "bench tools installed: ${missing[*]}"
