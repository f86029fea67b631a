#!/bin/bash
# Real-Slurm test of gradstep's sweep and training scripts (make test-slurm).
#
# 1. installs Debian's slurm-wlm daemons and munge when missing (apt-get; needs root);
# 2. starts munged, slurmctld and slurmd on localhost, in a private folder, on their own
#    ports and munge socket, with a minimal configuration for a container (no cgroups:
#    proctrack/linuxproc, task/none, jobacct_gather/none, no accounting database);
# 3. submits a 4-shard CPU sweep on a tiny model with `gradstep sweep submit`, waits, merges
#    with `gradstep sweep merge --strict`, and checks that every grid point is recorded
#    exactly once (and that the shards split the grid);
# 4. submits scripts/slurm/train.sbatch on a tiny training run, sends it SIGTERM once it has
#    written a checkpoint, and checks that it requeued itself, resumed from that checkpoint
#    and finished;
# 5. stops the daemons (also on failure);
# 6. runs a 2-task data-parallel training (`srun -n 2 gradstep train`, Gloo) and checks that
#    both ranks joined and rank 0 wrote the run.
#
# It skips (exit 0, with a message saying why) only where the daemons cannot run: Slurm not
# installed and no root / apt-get to install it. Environment: GRADSTEP_BIN (default: build
# with cargo), GRADSTEP_SHARED (default ../shared; used for the tiny reference weights and
# set3c when present, else random images and a freshly trained tiny model),
# GRADSTEP_SLURM_KEEP=1 keeps the work folder.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
say() { echo "test-slurm: $*"; }
skip() { say "SKIP: $*"; exit 0; }
fail() { say "FAIL: $*"; exit 1; }

# --- 1. Slurm and munge ---------------------------------------------------------------
need=(slurmctld slurmd sbatch squeue scontrol munged)
missing=()
for b in "${need[@]}"; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing+=("$b")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        skip "Slurm is not installed (${missing[*]} missing) and this is not a root Debian/Ubuntu machine to apt-get it"
    fi
    say "installing slurmctld slurmd slurm-client munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge >/tmp/gradstep-slurm-apt.log 2>&1 ||
           { apt-get update >>/tmp/gradstep-slurm-apt.log 2>&1 &&
             apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge >>/tmp/gradstep-slurm-apt.log 2>&1; }; }; then
        tail -5 /tmp/gradstep-slurm-apt.log
        skip "apt-get could not install Slurm (see /tmp/gradstep-slurm-apt.log)"
    fi
fi
if [ "$(id -u)" -ne 0 ]; then
    skip "the daemons run as root in this test (SlurmUser=root); run it as root"
fi
export PATH=$PATH:/usr/sbin

# --- gradstep binary ------------------------------------------------------------------
if [ -z "${GRADSTEP_BIN:-}" ]; then
    say "building gradstep (cargo build --release -p gradstep-cli)"
    ${CARGO:-cargo} build --release -p gradstep-cli
    GRADSTEP_BIN=${CARGO_TARGET_DIR:-$repo/target}/release/gradstep
fi
[ -x "$GRADSTEP_BIN" ] || fail "no gradstep binary at $GRADSTEP_BIN"
GRADSTEP_BIN=$(cd "$(dirname "$GRADSTEP_BIN")" && pwd)/$(basename "$GRADSTEP_BIN")
say "gradstep: $GRADSTEP_BIN"

# --- 2. daemons -----------------------------------------------------------------------
work=$(mktemp -d /tmp/gradstep-slurm.XXXXXX)
chmod 755 "$work"
host=$(hostname -s)
base=$((20000 + ($$ % 2000) * 4))
ctld_port=$base
slurmd_port=$((base + 1))
pids_to_stop=()
cleanup() {
    local rc=$?
    if [ -n "${SLURM_CONF:-}" ] && [ -f "$work/slurm.conf" ]; then
        scancel --full --quiet --user=root >/dev/null 2>&1 || true
    fi
    for f in "$work/slurmd.pid" "$work/slurmctld.pid" "$work/munged.pid"; do
        if [ -s "$f" ]; then
            kill "$(cat "$f")" 2>/dev/null || true
        fi
    done
    sleep 1
    if [ $rc -ne 0 ]; then
        for log in "$work"/log/*.log; do
            [ -f "$log" ] && { echo "== $log (last 15 lines)"; tail -n 15 "$log"; }
        done
    fi
    if [ "${GRADSTEP_SLURM_KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
        say "work folder kept: $work"
    else
        rm -rf "$work"
    fi
    exit $rc
}
trap cleanup EXIT
mkdir -p "$work"/{log,state,spool,munge}
chmod 700 "$work/munge"

# munged with its own key and socket (the system's munged, if any, is left alone).
dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$work/munge/munge.key"
munged --force --key-file="$work/munge/munge.key" --socket="$work/munge/munge.sock" \
    --pid-file="$work/munged.pid" --log-file="$work/log/munged.log" \
    --seed-file="$work/munge/munged.seed" ||
    skip "munged cannot start here (see $work/log/munged.log)"
for _ in $(seq 50); do [ -S "$work/munge/munge.sock" ] && break; sleep 0.1; done
munge --socket="$work/munge/munge.sock" -n | unmunge --socket="$work/munge/munge.sock" >/dev/null ||
    fail "munge credentials do not round-trip"

cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
cat >"$work/slurm.conf" <<EOF
ClusterName=gradsteptest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$work/munge/munge.sock,cred_expire=10
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
KillWait=30
MinJobAge=600
SchedulerParameters=defer_batch
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$work/slurm.conf
slurmctld -f "$SLURM_CONF" || skip "slurmctld cannot start here (see $work/log/slurmctld.log)"
slurmd -f "$SLURM_CONF" || skip "slurmd cannot start here (see $work/log/slurmd.log)"
state=""
for _ in $(seq 60); do
    state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
    [ "$state" = idle ] && break
    sleep 0.5
done
[ "$state" = idle ] || fail "the node never became idle (state: '${state:-none}')"
say "slurmctld + slurmd up on $host (ports $ctld_port/$slurmd_port), $cpus CPUs"

# Waits until job $1 (all its array tasks) has left the queue, at most $2 seconds.
wait_gone() {
    local job=$1 limit=$2 t=0
    while [ -n "$(squeue -h -j "$job" -o %i 2>/dev/null || true)" ]; do
        sleep 2
        t=$((t + 2))
        [ $t -lt "$limit" ] || fail "job $job still queued after ${limit}s: $(squeue -j "$job")"
    done
}

# --- data: tiny model and small images ------------------------------------------------
shared=${GRADSTEP_SHARED:-$repo/../shared}
images=$work/images
mkdir -p "$images"
if [ -d "$shared/data/set3c" ]; then
    cp "$shared"/data/set3c/*.png "$images/"
else
    say "no shared data at $shared: using random 64x64 images"
    python3 - "$images" <<'PY'
import random, struct, sys, zlib
random.seed(0)
for n in range(3):
    w = h = 64
    raw = b"".join(b"\0" + bytes(random.randrange(256) for _ in range(3 * w)) for _ in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    open(f"{sys.argv[1]}/{n}.png", "wb").write(png)
PY
fi

# --- 4 (first: it also yields a checkpoint). Requeue of a training job ----------------
# Long enough (≈ 5–15 s on 2 cores) that the SIGTERM, sent within a second or two of the
# first checkpoint (step 10), lands mid-run.
total=400
last=$(printf 'step-%08d.safetensors' "$total")
cat >"$work/train.json" <<EOF
{
  "name": "slurm-requeue",
  "runs_dir": "$work/runs",
  "model": { "channels": 3, "widths": [8, 16, 32, 64], "blocks": 1, "activation": "elu" },
  "data": { "roots": ["$images"], "patch_size": 32, "channels": 3, "batch_size": 2,
            "flips": true, "rotations": false, "seed": 0, "cache_dir": null, "prefetch": 1,
            "crops_per_image": 4, "threads": 1 },
  "steps": $total,
  "seed": 0,
  "validation": { "dirs": [], "every": 0, "sigmas_255": [25.0], "crop": 32, "limit": 1,
                  "seed": 0, "batch_size": 1 },
  "checkpoint": { "every": 10, "keep_last": 2 },
  "log": { "every": 10, "images": false }
}
EOF
ckpts=$work/runs/slurm-requeue/checkpoints
train_out=$work/train-%j.out
tjob=$(GRADSTEP_BIN=$GRADSTEP_BIN TRAIN_CONFIG=$work/train.json TRAIN_ARGS="--device cpu" \
    sbatch --parsable --chdir="$work" --output="$train_out" scripts/slurm/train.sbatch)
tjob=${tjob%%;*}
train_out=$work/train-$tjob.out
say "training job $tjob submitted"
t=0
until ls "$ckpts"/step-*.safetensors >/dev/null 2>&1; do
    sleep 1
    t=$((t + 1))
    [ $t -lt 300 ] || fail "no checkpoint after 300 s; output: $(cat "$train_out" 2>/dev/null)"
    [ -n "$(squeue -h -j "$tjob" -o %i)" ] || fail "training job ended before its first checkpoint: $(cat "$train_out")"
done
say "first checkpoint written ($(basename "$(ls "$ckpts"/step-*.safetensors | tail -1)")): sending SIGTERM"
scancel --signal=TERM "$tjob"
t=0
until grep -q "restart 1" "$train_out" 2>/dev/null; do
    sleep 2
    t=$((t + 2))
    [ $t -lt 240 ] || fail "the job did not restart after SIGTERM; output: $(cat "$train_out")"
done
wait_gone "$tjob" 600
grep -q '^interrupted:' "$train_out" || fail "gradstep train did not report the interruption: $(cat "$train_out")"
grep -q "requeuing job $tjob" "$train_out" || fail "train.sbatch did not requeue: $(cat "$train_out")"
resumed=$(grep -o 'resuming from [^ ]* (step [0-9]*)' "$train_out" | head -1 || true)
[ -n "$resumed" ] || fail "the restarted job did not resume from a checkpoint: $(cat "$train_out")"
step=$(echo "$resumed" | grep -o 'step [0-9]*' | grep -o '[0-9]*')
[ "$step" -gt 0 ] && [ "$step" -lt "$total" ] || fail "resumed at step $step, expected 0 < step < $total"
[ -f "$ckpts/$last" ] || fail "the resumed run did not finish: $(ls "$ckpts")"
restarts=$(scontrol show job "$tjob" 2>/dev/null | grep -o 'Restarts=[0-9]*' | cut -d= -f2 || echo "?")
say "OK training: SIGTERM -> checkpoint -> requeue (restarts=$restarts) -> $resumed -> step $total"

# --- 3. a 4-shard sweep ---------------------------------------------------------------
if [ -f "$shared/reference/gsdrunet_tiny_elu_weights.safetensors" ]; then
    "$GRADSTEP_BIN" import "$shared/reference/gsdrunet_tiny_elu_weights.safetensors" "$work/tiny.safetensors" >/dev/null
else
    cp "$ckpts/$last" "$work/tiny.safetensors"
fi
cat >"$work/tiny-sweep.json" <<EOF
{
  "description": "test-slurm: tiny model, 3 images cropped to 32x32",
  "task": "deblur",
  "axes": {
    "algorithm": ["gs-pgd"],
    "checkpoint": ["$work/tiny.safetensors"],
    "image_set": [{ "name": "tiny", "dir": "$images", "crop": 32 }],
    "noise": [2.55, 7.65],
    "kernel": ["uniform"],
    "sigma_den": [{ "times_noise": 1.0 }, { "times_noise": 1.5 }, { "times_noise": 2.0 }],
    "lambda": [0.1, 0.2]
  },
  "settings": { "max_iter": 5, "seed": 0 }
}
EOF
submit_out=$("$GRADSTEP_BIN" sweep submit tiny --config "$work/tiny-sweep.json" --shards 4 \
    --runs-dir "$work/sweeps" --device cpu --batch 4)
echo "$submit_out"
sjob=$(echo "$submit_out" | sed -n 's/^job id: //p')
[ -n "$sjob" ] || fail "gradstep sweep submit printed no job id"
echo "$submit_out" | grep -q "gradstep sweep merge tiny" || fail "submit printed no merge command"
wait_gone "$sjob" 600
"$GRADSTEP_BIN" sweep merge tiny --runs-dir "$work/sweeps" --strict
dir=$work/sweeps/tiny
grid=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["ids"]))' "$dir/grid.json")
[ "$grid" -eq 12 ] || fail "grid.json has $grid points, expected 2 noise x 3 sigma x 2 lambda = 12"
# Every point exactly once over the 4 shard files, each shard holding its own share.
python3 - "$dir" <<'PY' || fail "records do not cover the grid exactly once"
import collections, json, os, sys
d = sys.argv[1]
ids = json.load(open(os.path.join(d, "grid.json")))["ids"]
seen = collections.Counter()
for i in range(4):
    path = os.path.join(d, f"records-{i}of4.jsonl")
    recs = [json.loads(l) for l in open(path) if l.strip()]
    want = {p for k, p in enumerate(sorted(ids)) if k % 4 == i}
    got = {r["id"] for r in recs}
    assert got == want, f"shard {i}: {sorted(got)} != {sorted(want)}"
    for r in recs:
        assert r["status"] == "done", r
        assert len(r["images"]) == 3 and all(0 < im["psnr"] < 100 for im in r["images"]), r
        seen[r["id"]] += 1
assert sorted(seen) == sorted(ids) and set(seen.values()) == {1}, seen
print(f"test-slurm: {len(ids)} points, each recorded once across 4 shards")
PY
[ "$(($(wc -l <"$dir/table.csv") - 1))" -eq 12 ] || fail "table.csv does not have 12 rows"
[ -s "$dir/u-curve.png" ] || fail "no u-curve.png"
for i in 0 1 2 3; do
    [ -f "$dir/slurm-${sjob}_$i.out" ] || fail "no output of array task $i"
done
say "OK sweep: job $sjob, 4 array tasks, 12 points merged ($dir/table.md)"

# --- 6. data-parallel training under srun -n 2 (Gloo on the CPU) -------------------------
# Both tasks read their rank from Slurm (SLURM_PROCID/SLURM_NTASKS, the step's node list);
# each prints one line "rank R of 2 joined ..." once every rank is there; rank 0 reports.
cat >"$work/dist.json" <<EOF
{
  "name": "slurm-dist",
  "runs_dir": "$work/runs",
  "model": { "channels": 3, "widths": [8, 16, 32, 64], "blocks": 1, "activation": "elu" },
  "data": { "roots": ["$images"], "patch_size": 32, "channels": 3, "batch_size": 2,
            "flips": true, "rotations": false, "seed": 0, "cache_dir": null, "prefetch": 1,
            "crops_per_image": 4, "threads": 1 },
  "steps": 4,
  "seed": 0,
  "validation": { "dirs": [], "every": 0, "sigmas_255": [25.0], "crop": 32, "limit": 1,
                  "seed": 0, "batch_size": 1 },
  "checkpoint": { "every": 2, "keep_last": 2 },
  "log": { "every": 1, "images": false }
}
EOF
dist_out=$work/dist.out
OMP_NUM_THREADS=1 timeout 300 srun -n 2 --cpus-per-task=1 --chdir="$work" \
    "$GRADSTEP_BIN" train --config "$work/dist.json" --device cpu --dist-timeout 60 >"$dist_out" 2>&1 ||
    fail "srun -n 2 gradstep train failed: $(cat "$dist_out")"
for r in 0 1; do
    grep -q "^gradstep: rank $r of 2 joined (slurm" "$dist_out" || fail "rank $r did not take part: $(cat "$dist_out")"
done
grep -q "data-parallel: 2 ranks, batch 2 per rank (4 per step)" "$dist_out" ||
    fail "no data-parallel line: $(cat "$dist_out")"
grep -q "communication: .*(2 ranks, gloo)" "$dist_out" || fail "no communication line: $(cat "$dist_out")"
[ -f "$work/runs/slurm-dist/checkpoints/step-00000004.safetensors" ] || fail "no final checkpoint of the srun run"
say "OK data-parallel: srun -n 2, both ranks joined (Gloo), 4 steps, checkpoint written by rank 0"
say "PASS"
