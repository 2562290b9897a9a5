#!/bin/sh
# Install Debian packages the project uses, if missing and we can (root + apt):
#   dataset-fashion-mnist  the demo's and the real-data tests' data set (/usr/share/datasets/fashion-mnist)
#   chromium               the headless browser of the report and serving page tests (/usr/bin/chromium)
# Usage: get-debian-packages.sh [data] [browser]. Without root/apt: a hint, exit 0 (the demo then
# uses SYNTHETIC data, labelled as such, and the browser tests skip with their reason).
want=""
for what in "$@"; do
    case "$what" in
        data)
            dir=/usr/share/datasets/fashion-mnist
            [ -f "$dir/train-images-idx3-ubyte.gz" ] || [ -f "$dir/train-images-idx3-ubyte" ] || want="$want dataset-fashion-mnist" ;;
        browser)
            [ -x /usr/bin/chromium ] || want="$want chromium" ;;
        *) echo "get-debian-packages.sh: unknown item '$what' (data, browser)" >&2; exit 2 ;;
    esac
done
[ -z "$want" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing from Debian:$want"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $want >/dev/null && exit 0
    echo "apt-get could not install:$want" >&2
fi
echo "missing Debian packages:$want; run 'sudo apt-get install$want'" >&2
echo "(without dataset-fashion-mnist the demo uses SYNTHETIC data; without chromium the browser tests skip)" >&2
exit 0
