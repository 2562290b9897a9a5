#!/bin/sh
# Install Fashion-MNIST (Debian package dataset-fashion-mnist) if it is missing and we can.
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ] || [ -f "$dir/train-images-idx3-ubyte" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Fashion-MNIST: apt-get install dataset-fashion-mnist"
    apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null && exit 0
    echo "apt-get could not install dataset-fashion-mnist" >&2
fi
echo "Fashion-MNIST is not installed: run 'sudo apt-get install dataset-fashion-mnist'" >&2
echo "(or pass --data fashion-mnist:DIR with the four IDX files); the demo will use SYNTHETIC data" >&2
exit 0
