#!/usr/bin/env bash
# One shard of an srhost run as a task of a Slurm job array (docs/scale-out.md).
#
#   PIPELINE=configs/table1-ssim.toml sbatch --array=0-99 scripts/slurm-array.sh
#   sbatch --dependency=afterany:<array job id> --wrap "srhost merge out/table1"
#
# Task K of N runs `srhost --shard K/N`: every N-th image of the sorted list, from the K-th;
# every task computes the same list, and all of them write into the pipeline's run.output.
# Extra arguments go to srhost (e.g. --set run.output=/scratch/run1).
#SBATCH --job-name=srhost
#SBATCH --cpus-per-task=4
#SBATCH --output=srhost-%A_%a.log
set -euo pipefail
: "${PIPELINE:?set PIPELINE to the pipeline TOML}"
: "${SLURM_ARRAY_TASK_ID:?run this as a job array task: sbatch --array=0-99}"
SRHOST="${SRHOST:-srhost}"
N="${SLURM_ARRAY_TASK_COUNT:?Slurm sets SLURM_ARRAY_TASK_COUNT for job arrays}"
# A contiguous array (step 1) from any first index: --array=0-99 and --array=1-100 alike.
K=$((SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0}))
exec "$SRHOST" --pipeline "$PIPELINE" --shard "${K}/${N}" \
    --jobs "${SLURM_CPUS_PER_TASK:-0}" "$@"
