#!/usr/bin/env bash
# Fetch the real corpora telugu-s2s trains on into DEST/<corpus>/, checksum-verified and extracted
# in each corpus's own layout, ready for:
#     python prepare_speaker_data.py --data_dir DEST --out data/prepared
#
# Every step can be repeated: downloads resume (curl -C -), an extracted archive leaves a marker
# DEST/<corpus>/.<archive>.done and is skipped next time, a corpus that fails does not stop the
# others (the summary at the end lists it and the exit status is 1).
set -uo pipefail  # no -e: one unreachable host must not stop the other corpora

usage() {
  cat <<EOF
Usage: bash download_datasets.sh [options]

Downloads, verifies and extracts into DEST/<corpus>/:
  codec   librispeech  OpenSLR SLR12 (train-clean-100 by default)     -> librispeech/LibriSpeech/<split>/...
          vctk         VCTK 0.92 from Edinburgh DataShare             -> vctk/wav48_silence_trimmed, vctk/txt
          ljspeech     LJSpeech 1.1 from keithito.com                 -> ljspeech/LJSpeech-1.1/{metadata.csv,wavs}
  telugu  slr66        OpenSLR SLR66 Telugu (female + male zips)      -> slr66/te_in_{female,male}/{line_index.tsv,*.wav}
          indictts     IndicTTS Telugu parquet from the HF Hub        -> indictts/data/*.parquet
          commonvoice  Common Voice Telugu: gated, downloaded by you  -> commonvoice/<release>/te/{validated.tsv,clips}

Options:
  --only codec|telugu|all      which group to fetch (default all)
  --dest DIR                   where to put the corpora (default data/raw)
  --librispeech "SPLITS"       LibriSpeech splits, space-separated (default "train-clean-100"), e.g.
                               "train-clean-100 train-clean-360 dev-clean"
  --dry-run                    print what would be fetched, the sizes and the disk needed; fetch nothing
  --keep-archives              keep each archive after extraction (default: delete it)
  --reserve-gb N               fail before starting unless N GB stay free afterwards (default 2)
  -h, --help                   this text

Environment (mirrors, tests):
  OPENSLR_BASE       default https://www.openslr.org/resources  (mirrors: https://us.openslr.org/resources,
                     https://openslr.elda.org/resources)
  VCTK_URL           default https://datashare.ed.ac.uk/bitstream/handle/10283/3443/VCTK-Corpus-0.92.zip
  LJSPEECH_URL       default https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2
  HF_ENDPOINT        default https://huggingface.co  (HF_TOKEN is used if the dataset asks for a login)
  INDICTTS_REPO      default SPRINGLab/IndicTTS_Telugu
  PYTHON             the Python with huggingface_hub, for IndicTTS (default python3)
  DOWNLOAD_CHECKSUMS a file of "<md5-or-sha256>  <archive name>" lines that override the shipped ones
                     (for a mirror that repacks archives)
EOF
}

# --- what exists upstream --------------------------------------------------------------------------

OPENSLR_BASE=${OPENSLR_BASE:-https://www.openslr.org/resources}
VCTK_URL=${VCTK_URL:-https://datashare.ed.ac.uk/bitstream/handle/10283/3443/VCTK-Corpus-0.92.zip}
LJSPEECH_URL=${LJSPEECH_URL:-https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2}
HF_ENDPOINT=${HF_ENDPOINT:-https://huggingface.co}
INDICTTS_REPO=${INDICTTS_REPO:-SPRINGLab/IndicTTS_Telugu}
PYTHON=${PYTHON:-python3}
LIBRISPEECH_SPLITS_KNOWN="dev-clean dev-other test-clean test-other train-clean-100 train-clean-360 train-other-500"

# Checksums the publishers give. LibriSpeech: https://www.openslr.org/resources/12/md5sum.txt.
# VCTK 0.92: the md5 on its DataShare page (https://datashare.ed.ac.uk/handle/10283/3443).
# LJSpeech: the sha256 torchaudio's LJSPEECH dataset pins. SLR66 and the IndicTTS parquet have
# none we could confirm: their sha256 is recorded on first download and checked on every later one.
published_checksum() {
  case "$1" in
    dev-clean.tar.gz)       echo "md5 42e2234ba48799c1f50f24a7926300a1" ;;
    dev-other.tar.gz)       echo "md5 c8d0bcc9cca99d4f8b62fcc847357931" ;;
    test-clean.tar.gz)      echo "md5 32fa31d27d2e1cad72775fee3f4849a9" ;;
    test-other.tar.gz)      echo "md5 fb5a50374b501bb3bac4815ee91d3135" ;;
    train-clean-100.tar.gz) echo "md5 2a93770f6d5c6c964bc36631d331a522" ;;
    train-clean-360.tar.gz) echo "md5 c0e676e450a7ff2f54aeade5171606fa" ;;
    train-other-500.tar.gz) echo "md5 d1a0fd59409feb2c614ce4d30c387708" ;;
    VCTK-Corpus-0.92.zip)   echo "md5 8a6ba2946b36fcbef0212cad601f4bfa" ;;
    LJSpeech-1.1.tar.bz2)   echo "sha256 be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5" ;;
  esac
}

# Sizes as the download pages list them (MB), for --dry-run and for a server that sends no
# Content-Length; a real run asks the server first. Then how much bigger the extracted tree is,
# in percent of the archive (FLAC does not compress further; WAV in a zip a little).
approx_mb() {
  case "$1" in
    dev-clean.tar.gz) echo 337 ;;        dev-other.tar.gz) echo 314 ;;
    test-clean.tar.gz) echo 346 ;;       test-other.tar.gz) echo 328 ;;
    train-clean-100.tar.gz) echo 6300 ;; train-clean-360.tar.gz) echo 23000 ;;
    train-other-500.tar.gz) echo 30000 ;;
    te_in_female.zip) echo 505 ;;        te_in_male.zip) echo 529 ;;
    VCTK-Corpus-0.92.zip) echo 11000 ;;  LJSpeech-1.1.tar.bz2) echo 2749 ;;
    indictts) echo 6440 ;;  # four parquet shards, used as they are (no extraction)
    *) echo 0 ;;
  esac
}
extracted_percent() {
  case "$1" in
    librispeech|vctk) echo 105 ;; slr66) echo 120 ;; ljspeech) echo 140 ;; *) echo 0 ;;
  esac
}

# --- options ---------------------------------------------------------------------------------------

ONLY=all
DEST=data/raw
LIBRISPEECH_SPLITS=train-clean-100
DRY_RUN=0
KEEP_ARCHIVES=0
RESERVE_GB=2
CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-20}

die() { echo "error: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --only) [ $# -ge 2 ] || die "--only needs a value"; ONLY=$2; shift 2 ;;
    --dest) [ $# -ge 2 ] || die "--dest needs a value"; DEST=$2; shift 2 ;;
    --librispeech) [ $# -ge 2 ] || die "--librispeech needs a value"; LIBRISPEECH_SPLITS=$2; shift 2 ;;
    --reserve-gb) [ $# -ge 2 ] || die "--reserve-gb needs a value"; RESERVE_GB=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --keep-archives) KEEP_ARCHIVES=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done

case "$ONLY" in codec|telugu|all) ;; *) die "--only must be codec, telugu or all (got '$ONLY')" ;; esac
case "$RESERVE_GB" in ''|*[!0-9]*) die "--reserve-gb must be a whole number of GB" ;; esac
for split in $LIBRISPEECH_SPLITS; do
  case " $LIBRISPEECH_SPLITS_KNOWN " in *" $split "*) ;;
    *) die "unknown LibriSpeech split '$split' (known: $LIBRISPEECH_SPLITS_KNOWN)" ;; esac
done

# The archives to fetch, one per line: corpus, archive name, URL, folder (under DEST/<corpus>/)
# to extract into. SLR66's two zips each hold a line_index.tsv at their root, so each gets its own.
plan_archives() {
  if [ "$ONLY" != telugu ]; then
    for split in $LIBRISPEECH_SPLITS; do
      echo "librispeech $split.tar.gz $OPENSLR_BASE/12/$split.tar.gz ."
    done
    echo "vctk VCTK-Corpus-0.92.zip $VCTK_URL ."
    echo "ljspeech LJSpeech-1.1.tar.bz2 $LJSPEECH_URL ."
  fi
  if [ "$ONLY" != codec ]; then
    echo "slr66 te_in_female.zip $OPENSLR_BASE/66/te_in_female.zip te_in_female"
    echo "slr66 te_in_male.zip $OPENSLR_BASE/66/te_in_male.zip te_in_male"
  fi
}
wants_telugu() { [ "$ONLY" != codec ]; }

# --- small helpers ---------------------------------------------------------------------------------

log() { echo "[$1] ${*:2}"; }
host_of() { echo "$1" | sed -E 's#^([a-zA-Z]+://[^/]+).*#\1#'; }
file_size() { if [ -f "$1" ]; then wc -c <"$1" | tr -d ' '; else echo 0; fi; }
gb() { awk -v b="$1" 'BEGIN { printf "%.1f GB", b / 1e9 }'; }
marker_of() { echo "$DEST/$1/.$2.done"; }

hash_file() {  # algo file -> hex
  case "$1" in
    md5) if command -v md5sum >/dev/null; then md5sum "$2" | cut -d' ' -f1; else md5 -q "$2"; fi ;;
    sha256) if command -v sha256sum >/dev/null; then sha256sum "$2" | cut -d' ' -f1
            else shasum -a 256 "$2" | cut -d' ' -f1; fi ;;
  esac
}

# "algo hex where-it-came-from" for an archive, or nothing when no checksum is known yet.
expected_checksum() {  # name corpus_dir
  local name=$1 dir=$2 hex
  if [ -n "${DOWNLOAD_CHECKSUMS:-}" ] && [ -f "$DOWNLOAD_CHECKSUMS" ]; then
    hex=$(awk -v n="$name" '$2 == n || $2 == "*" n { print $1; exit }' "$DOWNLOAD_CHECKSUMS")
    if [ -n "$hex" ]; then
      if [ ${#hex} -eq 32 ]; then echo "md5 $hex $DOWNLOAD_CHECKSUMS"; else echo "sha256 $hex $DOWNLOAD_CHECKSUMS"; fi
      return
    fi
  fi
  local published
  published=$(published_checksum "$name")
  if [ -n "$published" ]; then echo "$published the publisher's list"; return; fi
  if [ -f "$dir/$name.sha256" ]; then echo "sha256 $(cut -d' ' -f1 "$dir/$name.sha256") $dir/$name.sha256 (first download)"; fi
}

UNREACHABLE_HOSTS=""
FAILURES=""
DONE_LINES=""
fail() { FAILURES="$FAILURES$1: ${*:2}"$'\n'; log "$1" "FAILED: ${*:2}" >&2; }
record() { DONE_LINES="$DONE_LINES  $*"$'\n'; }
host_unreachable() { case "$UNREACHABLE_HOSTS" in *"|$1|"*) return 0 ;; esac; return 1; }

# HEAD the URL: sets PROBE_SIZE (0 when the server does not say); non-zero when the host cannot be
# reached at all (DNS, refused, timeout, TLS), with curl's own words in PROBE_ERROR.
probe() {
  local headers rc
  PROBE_SIZE=0; PROBE_ERROR=""
  headers=$(curl -sSIL --connect-timeout "$CONNECT_TIMEOUT" --max-time 120 "$1" 2>&1 </dev/null)
  rc=$?
  if [ $rc -ne 0 ]; then PROBE_ERROR=$(echo "$headers" | grep '^curl:' | tail -1); return $rc; fi
  # The last response's headers count (after redirects); only a 2xx gives a usable length.
  PROBE_SIZE=$(echo "$headers" | tr -d '\r' | awk '
    /^HTTP\// { ok = ($2 ~ /^2/); n = 0 }
    tolower($1) == "content-length:" && ok { n = $2 }
    END { print n + 0 }')
  return 0
}

# --- download, verify, extract one archive ---------------------------------------------------------

download() {  # url part-file: resumes a partial file; curl's progress bar only on a terminal
  local url=$1 part=$2 rc code progress="-sS"
  [ -t 2 ] && progress="-#"
  code=$(curl -fL $progress --connect-timeout "$CONNECT_TIMEOUT" --retry 3 --retry-delay 2 -C - -o "$part" \
    -w '%{http_code}' "$url" </dev/null)
  rc=$?
  # 33/36: the server cannot resume; 416: the part is already whole but the server gave no size
  # to tell so beforehand. Either way, start over rather than trust the part.
  if [ $rc -eq 33 ] || [ $rc -eq 36 ] || [ "$code" = 416 ]; then
    echo "  (cannot resume $(basename "$part"); downloading from the start)"
    rm -f "$part"
    curl -fL $progress --connect-timeout "$CONNECT_TIMEOUT" --retry 3 --retry-delay 2 -o "$part" "$url" </dev/null
    rc=$?
  fi
  return $rc
}

verify() {  # corpus name archive-file
  local corpus=$1 name=$2 file=$3 dir="$DEST/$1" expected algo hex source actual
  expected=$(expected_checksum "$name" "$dir")
  if [ -z "$expected" ]; then
    actual=$(hash_file sha256 "$file")
    echo "$actual  $name" >"$dir/$name.sha256"
    log "$corpus" "$name: no published checksum; recorded sha256 $actual in $dir/$name.sha256, checked on later downloads"
    VERIFIED="checksum recorded"
    return 0
  fi
  read -r algo hex source <<<"$expected"
  actual=$(hash_file "$algo" "$file")
  if [ "$actual" != "$hex" ]; then
    rm -f "$file"
    fail "$corpus" "checksum mismatch for $name: expected $algo $hex (from $source), got $actual;" \
      "the file is corrupt or was changed upstream, so it was deleted (run again to download it again)"
    return 1
  fi
  log "$corpus" "$name: $algo checksum OK"
  VERIFIED="$algo verified"
}

extract() {  # archive-file target-dir: the system's tools, or Python's where one is missing
  mkdir -p "$2"
  case "$1" in
    *.tar.gz|*.tgz) tar -xzf "$1" -C "$2" --no-same-owner ;;
    *.tar.bz2) if command -v lbzip2 >/dev/null; then tar -I lbzip2 -xf "$1" -C "$2" --no-same-owner
               elif command -v bzip2 >/dev/null; then tar -xjf "$1" -C "$2" --no-same-owner
               else "$PYTHON" -c 'import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    t.extractall(sys.argv[2], **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))' "$1" "$2"; fi ;;
    *.zip) if command -v unzip >/dev/null; then unzip -q -o "$1" -d "$2" </dev/null
           else "$PYTHON" -m zipfile -e "$1" "$2"; fi ;;
    *) echo "do not know how to extract $1" >&2; return 1 ;;
  esac
}

fetch_archive() {  # corpus name url subdir size
  local corpus=$1 name=$2 url=$3 subdir=$4 size=$5 dir="$DEST/$1" host rc
  local archive="$DEST/$1/$2" part="$DEST/$1/$2.part"
  host=$(host_of "$url")
  mkdir -p "$dir"
  if [ ! -f "$archive" ]; then
    if [ "$size" -gt 0 ] && [ "$(file_size "$part")" -gt "$size" ]; then rm -f "$part"; fi
    if [ "$size" -gt 0 ] && [ "$(file_size "$part")" -eq "$size" ]; then
      log "$corpus" "$name: already fully downloaded"
    else
      [ -f "$part" ] && log "$corpus" "$name: resuming at $(file_size "$part") bytes"
      log "$corpus" "downloading $url"
      download "$url" "$part"
      rc=$?
      if [ $rc -ne 0 ]; then
        case $rc in
          22) fail "$corpus" "$host answered with an HTTP error for $url (curl exit 22); partial file kept for resuming" ;;
          5|6|7|28|35|52|55|56) fail "$corpus" "cannot reach $host (curl exit $rc); partial file kept for resuming" ;;
          *) fail "$corpus" "download of $url from $host failed (curl exit $rc); partial file kept for resuming" ;;
        esac
        return 1
      fi
    fi
    mv -f "$part" "$archive"
  fi
  verify "$corpus" "$name" "$archive" || return 1
  log "$corpus" "extracting $name into $dir/${subdir#.}"
  if ! extract "$archive" "$dir/$subdir"; then
    fail "$corpus" "extracting $name failed (archive kept at $archive)"
    return 1
  fi
  date -u +"%Y-%m-%dT%H:%M:%SZ extracted from $url" >"$(marker_of "$corpus" "$name")"
  [ "$KEEP_ARCHIVES" -eq 1 ] || rm -f "$archive"
  record "$corpus $name: downloaded, $VERIFIED, extracted"
}

# IndicTTS lives on the HF Hub as parquet shards whose audio column already holds the undecoded
# file bytes (what Audio(decode=False) reads), so the shards are fetched as they are: resumable,
# one copy on disk, no decoding (which would need torchcodec).
fetch_indictts() {
  local dir="$DEST/indictts" host rc
  host=$(host_of "$HF_ENDPOINT")
  mkdir -p "$dir"
  log indictts "downloading $INDICTTS_REPO from $HF_ENDPOINT"
  HF_ENDPOINT="$HF_ENDPOINT" "$PYTHON" - "$INDICTTS_REPO" "$dir" <<'PY'
import sys
repo, dest = sys.argv[1], sys.argv[2]
try:
    from huggingface_hub import snapshot_download
except ImportError:
    sys.exit("huggingface_hub is missing: pip install -r requirements_new.txt")
try:
    snapshot_download(repo_id=repo, repo_type="dataset", local_dir=dest,
                      allow_patterns=["*.parquet", "README.md"])
except Exception as e:  # the hub client raises many types; the shell only needs the words
    sys.exit(f"{type(e).__name__}: {e}")
import glob
import pyarrow.parquet as pq
shards = sorted(glob.glob(f"{dest}/**/*.parquet", recursive=True))
if not shards:
    sys.exit(f"no parquet files in {repo}")
for shard in shards:
    names = set(pq.read_schema(shard).names)
    if not {"audio", "text"} <= names:
        sys.exit(f"{shard} has columns {sorted(names)}, expected audio and text")
print(f"{len(shards)} parquet shards")
PY
  rc=$?
  if [ $rc -ne 0 ]; then fail indictts "download of $INDICTTS_REPO from $host failed (see the message above)"; return 1; fi
  # No published checksums: record the shards' sha256 once, check them on every later run.
  if [ -f "$dir/SHA256SUMS" ]; then
    if ! (cd "$dir" && sha256sum -c --quiet SHA256SUMS); then
      fail indictts "parquet shards do not match $dir/SHA256SUMS (changed upstream or corrupt)"; return 1
    fi
  else
    (cd "$dir" && find . -name '*.parquet' -not -path './.cache/*' | sort | xargs sha256sum >SHA256SUMS)
    log indictts "recorded the shards' sha256 in $dir/SHA256SUMS"
  fi
  date -u +"%Y-%m-%dT%H:%M:%SZ from $HF_ENDPOINT/datasets/$INDICTTS_REPO" >"$(marker_of indictts hub)"
  record "indictts $INDICTTS_REPO: downloaded (parquet, sha256 in $dir/SHA256SUMS)"
}

indictts_size() {  # bytes of the parquet shards, as the Hub lists them (the estimate if it does not say)
  local size
  size=$(HF_ENDPOINT="$HF_ENDPOINT" "$PYTHON" - "$INDICTTS_REPO" 2>/dev/null <<'PY'
import sys
from huggingface_hub import HfApi
files = HfApi().list_repo_tree(sys.argv[1], repo_type="dataset", recursive=True)
print(sum(getattr(f, "size", 0) or 0 for f in files if f.path.endswith(".parquet")))
PY
  )
  case "$size" in ''|0|*[!0-9]*) echo $(( $(approx_mb indictts) * 1000000 )) ;; *) echo "$size" ;; esac
}

commonvoice_instructions() {
  local found
  found=$(find "$DEST/commonvoice" -maxdepth 4 -name validated.tsv 2>/dev/null | head -1)
  if [ -n "$found" ]; then log commonvoice "found $found"; record "commonvoice: present ($found)"; return; fi
  cat <<EOF
[commonvoice] Common Voice Telugu is gated (you must accept its terms), so this script does not fetch it.
  1. Go to https://commonvoice.mozilla.org/datasets (releases are served by the Mozilla Data
     Collective), choose Telugu, accept the terms and download the archive.
  2. Extract it under $DEST/commonvoice/ so that validated.tsv and clips/ land at
     $DEST/commonvoice/<release>/te/validated.tsv, e.g.
         mkdir -p $DEST/commonvoice && tar -xzf cv-corpus-*-te.tar.gz -C $DEST/commonvoice
  prepare_speaker_data.py finds it there; nothing else to do.
EOF
  record "commonvoice: not present (gated; instructions above)"
}

# --- plan: what is left to do, how big, whether the hosts answer -----------------------------------

[ "$DRY_RUN" -eq 1 ] || mkdir -p "$DEST" 2>/dev/null || die "cannot create $DEST"
[ "$DRY_RUN" -eq 1 ] || for tool in curl tar; do
  command -v "$tool" >/dev/null || die "'$tool' is needed (apt-get install $tool)"
done

TODO=""          # lines: corpus name url subdir size
NEED_EXTRACTED=0
NEED_DOWNLOAD_SUM=0
NEED_DOWNLOAD_MAX=0
add_need() {  # corpus remaining-download-bytes archive-bytes
  local extracted=$(( $3 / 100 * $(extracted_percent "$1") ))
  NEED_EXTRACTED=$(( NEED_EXTRACTED + extracted ))
  NEED_DOWNLOAD_SUM=$(( NEED_DOWNLOAD_SUM + $2 ))
  [ "$2" -gt "$NEED_DOWNLOAD_MAX" ] && NEED_DOWNLOAD_MAX=$2
  return 0
}

while read -r corpus name url subdir; do
  [ -n "$corpus" ] || continue
  if [ -f "$(marker_of "$corpus" "$name")" ]; then
    log "$corpus" "$name: already downloaded and extracted (delete $(marker_of "$corpus" "$name") to redo)"
    record "$corpus $name: already done"
    continue
  fi
  archive="$DEST/$corpus/$name"
  size=$(( $(approx_mb "$name") * 1000000 ))
  if [ "$DRY_RUN" -eq 1 ]; then
    have=$(file_size "$DEST/$corpus/$name.part")
    [ -f "$archive" ] && have=$(file_size "$archive")
    note=""; [ "$have" -gt 0 ] && note="; $(gb "$have") already here"
    target="$DEST/$corpus"; [ "$subdir" = . ] || target="$target/$subdir"
    echo "[$corpus] would fetch $url (~$(gb "$size")$note) -> $target/"
    add_need "$corpus" $(( size > have ? size - have : 0 )) "$size"
    continue
  fi
  if [ -f "$archive" ]; then
    size=$(file_size "$archive"); add_need "$corpus" 0 "$size"
    TODO="$TODO$corpus $name $url $subdir $size"$'\n'; continue
  fi
  host=$(host_of "$url")
  if host_unreachable "$host"; then fail "$corpus" "cannot reach $host (see above); skipped $name"; continue; fi
  if ! probe "$url"; then
    UNREACHABLE_HOSTS="$UNREACHABLE_HOSTS|$host|"
    fail "$corpus" "cannot reach $host for $url: ${PROBE_ERROR:-no answer}"
    continue
  fi
  [ "$PROBE_SIZE" -gt 0 ] && size=$PROBE_SIZE
  have=$(file_size "$DEST/$corpus/$name.part")
  add_need "$corpus" $(( size > have ? size - have : 0 )) "$size"
  TODO="$TODO$corpus $name $url $subdir $size"$'\n'
done < <(plan_archives)

INDICTTS_TODO=0
if wants_telugu; then
  if [ -f "$(marker_of indictts hub)" ]; then
    log indictts "already downloaded (delete $(marker_of indictts hub) to redo)"; record "indictts: already done"
  elif [ "$DRY_RUN" -eq 1 ]; then
    size=$(( $(approx_mb indictts) * 1000000 ))
    echo "[indictts] would fetch $HF_ENDPOINT/datasets/$INDICTTS_REPO (parquet, ~$(gb "$size")) -> $DEST/indictts/data"
    add_need indictts 0 0; NEED_EXTRACTED=$(( NEED_EXTRACTED + size ))
  elif ! "$PYTHON" -c "import huggingface_hub, pyarrow" 2>/dev/null; then
    fail indictts "$PYTHON with huggingface_hub and pyarrow is needed (pip install -r requirements_new.txt)"
  elif ! probe "$HF_ENDPOINT"; then
    fail indictts "cannot reach $(host_of "$HF_ENDPOINT"): ${PROBE_ERROR:-no answer}"
  else
    INDICTTS_TODO=1; NEED_EXTRACTED=$(( NEED_EXTRACTED + $(indictts_size) ))
  fi
fi

# Archives are deleted once extracted, so at most one sits on disk beside the extracted trees.
if [ "$KEEP_ARCHIVES" -eq 1 ]; then NEED=$(( NEED_EXTRACTED + NEED_DOWNLOAD_SUM ))
else NEED=$(( NEED_EXTRACTED + NEED_DOWNLOAD_MAX )); fi
existing=$DEST
while [ ! -d "$existing" ]; do existing=$(dirname "$existing"); done  # --dry-run creates nothing
FREE=$(( $(df -Pk "$existing" | awk 'NR == 2 { print $4 }') * 1024 ))
RESERVE=$(( RESERVE_GB * 1000000000 ))

if [ "$DRY_RUN" -eq 1 ]; then
  wants_telugu && commonvoice_instructions
  echo "disk: needs ~$(gb "$NEED") in $DEST (+ $RESERVE_GB GB reserve), $(gb "$FREE") free"
  [ $(( NEED + RESERVE )) -le "$FREE" ] || echo "warning: not enough free space for this selection"
  echo "dry run: nothing was downloaded"
  exit 0
fi

if [ $(( NEED + RESERVE )) -gt "$FREE" ]; then
  die "not enough disk space in $DEST: needs ~$(gb "$NEED") + $RESERVE_GB GB reserve, only $(gb "$FREE") free" \
      "(choose another --dest, fewer corpora with --only/--librispeech, or a smaller --reserve-gb)"
fi
[ "$NEED" -gt 0 ] && echo "disk: needs ~$(gb "$NEED"), $(gb "$FREE") free in $DEST"

# --- fetch -----------------------------------------------------------------------------------------

while read -r corpus name url subdir size; do
  [ -n "$corpus" ] || continue
  fetch_archive "$corpus" "$name" "$url" "$subdir" "$size"
done <<<"$TODO"
[ "$INDICTTS_TODO" -eq 1 ] && fetch_indictts
wants_telugu && commonvoice_instructions

echo
echo "== summary ($DEST) =="
printf '%s' "$DONE_LINES"
if [ -n "$FAILURES" ]; then
  echo "FAILED:"
  printf '%s' "$FAILURES" | sed 's/^/  /'
  exit 1
fi
echo "all requested corpora are in place; next: python prepare_speaker_data.py --data_dir $DEST --out data/prepared"
