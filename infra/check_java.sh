#!/usr/bin/env bash
# Spark needs a full Java 17 or 21: a trimmed runtime (e.g. a JDK from PyPI) lacks the
# jdk.incubator.vector module that pyspark's launcher always asks for, and the JVM then exits
# at start. Check now, with a message that says what to install, instead of failing in Spark.
set -u
java_bin="${JAVA_HOME:+$JAVA_HOME/bin/}java"

explain() {
  cat >&2 <<MSG
genai-lifecycle needs a full Java 17 or 21 for Spark: $1
Install one, then rerun make:
  Debian/Ubuntu:  sudo apt-get install -y openjdk-17-jdk-headless
  Fedora/RHEL:    sudo dnf install -y java-17-openjdk-devel
  macOS:          brew install openjdk@17   (then set JAVA_HOME)
or point JAVA_HOME at a full JDK 17/21.
MSG
}

install_with_apt() {  # only where we may: root on a Debian-like machine
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
  echo "Installing openjdk-17-jdk-headless with apt-get ..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless
}

check() {
  command -v "$java_bin" >/dev/null 2>&1 || { echo "no java found"; return 1; }
  local version major
  version=$("$java_bin" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
  major=${version%%.*}
  case "$major" in 17|21) ;; *) echo "found Java '$version', need 17 or 21"; return 1;; esac
  "$java_bin" --list-modules 2>/dev/null | grep -q '^jdk.incubator.vector' \
    || { echo "Java $version has no jdk.incubator.vector module (a trimmed runtime)"; return 1; }
  return 0
}

if problem=$(check); then exit 0; fi
if install_with_apt && check >/dev/null; then exit 0; fi
explain "$problem"
exit 1
