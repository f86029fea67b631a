#!/usr/bin/env bash
# Downloads the standard training set of the GS / Prox denoisers into datasets/train/ and
# the colour test sets into datasets/test/.
#
#   *** NOT TESTABLE OFFLINE: this script needs the internet and the original hosts. ***
#   It was written from the datasets' published URLs and has not been run in CI; hosts
#   move. If a URL fails, fetch the archive by hand and put it in $DL (it is then reused).
#
# ~8,600 images, ~13 GB of archives, ~31 GB once in the sampler's decode-once cache
# (see datasets/README.md). Needs curl, tar, unzip and, for Waterloo, unrar or 7z.
#
#   scripts/download-datasets.sh [bsd|waterloo|div2k|flickr2k|test|all]   (default: all)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
root="${GRADSTEP_DATASETS:-$repo/datasets}"
DL="${DL:-$root/downloads}"
mkdir -p "$DL" "$root/train" "$root/test"

fetch() { # url file
    [ -s "$DL/$2" ] && return 0
    echo "downloading $1" >&2
    curl -fL --retry 3 -o "$DL/$2.part" "$1" && mv "$DL/$2.part" "$DL/$2"
}

bsd() { # CBSD400 (BSDS500 train + test, 400 images) and CBSD68 (68 of BSDS500 val)
    fetch https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz BSR_bsds500.tgz
    tmp=$(mktemp -d)
    tar -xzf "$DL/BSR_bsds500.tgz" -C "$tmp"
    mkdir -p "$root/train/CBSD400"
    cp "$tmp"/BSR/BSDS500/data/images/train/*.jpg "$tmp"/BSR/BSDS500/data/images/test/*.jpg "$root/train/CBSD400/"
    rm -rf "$tmp"
}

waterloo() { # Waterloo Exploration Database, 4,744 images
    fetch http://ivc.uwaterloo.ca/database/WaterlooExploration/exploration_database_and_code.rar waterloo.rar
    mkdir -p "$root/train/Waterloo"
    if command -v unrar >/dev/null; then
        unrar x -o+ "$DL/waterloo.rar" "$root/train/Waterloo/" >&2
    else
        7z x -y -o"$root/train/Waterloo" "$DL/waterloo.rar" >&2
    fi
}

div2k() { # DIV2K training part, 800 2K images
    fetch https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip DIV2K_train_HR.zip
    unzip -qo "$DL/DIV2K_train_HR.zip" -d "$root/train/"
}

flickr2k() { # Flickr2K, 2,650 2K images (HR part only is used)
    fetch https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar Flickr2K.tar
    tar -xf "$DL/Flickr2K.tar" -C "$root/train/" --wildcards 'Flickr2K/Flickr2K_HR/*'
}

test_sets() { # Kodak24 (CBSD68 and set3c ship with ../shared/data)
    mkdir -p "$root/test/Kodak24"
    for i in $(seq -w 1 24); do
        f="kodim$i.png"
        [ -s "$root/test/Kodak24/$f" ] || curl -fL --retry 3 -o "$root/test/Kodak24/$f" "http://r0k.us/graphics/kodak/kodak/$f"
    done
}

case "${1:-all}" in
    bsd) bsd ;; waterloo) waterloo ;; div2k) div2k ;; flickr2k) flickr2k ;; test) test_sets ;;
    all) bsd; waterloo; div2k; flickr2k; test_sets ;;
    *) echo "usage: $0 [bsd|waterloo|div2k|flickr2k|test|all]" >&2; exit 2 ;;
esac
echo "datasets under $root/train and $root/test; train with roots = [\"$root/train\"]" >&2
