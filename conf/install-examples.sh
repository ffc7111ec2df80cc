#!/bin/sh
# Run by `meson install`: copies the example configuration into DIR (under
# $DESTDIR), file by file, leaving any file that is already there alone.
set -eu
dir=$1; shift
src=${MESON_SOURCE_ROOT}/conf
dest=${DESTDIR:-}$dir
for f in "$@"; do
	if [ -e "$dest/$f" ]; then
		echo "keeping existing $dest/$f"
		continue
	fi
	install -D -m 0644 "$src/$f" "$dest/$f"
	echo "installed $dest/$f"
done
