#!/usr/bin/env bash
# Run the whole study with papermill: preprocess COCO and CelebA, train Model A and Model B,
# evaluate Bicubic vs A vs B on the CelebA test set, plot the losses. See --help.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./run_all.sh [options]

Runs the study's notebooks in order with papermill, from ./.venv (created on first use by
scripts/ensure_venv.sh "cpu,test,notebooks,instruments"):

  01_preprocess (COCO) -> 01_preprocess (CelebA) -> 02_train (Model A on COCO)
  -> 02_train (Model B on CelebA) -> 04_evaluate (Bicubic vs A vs B on the CelebA test set)
  -> 05_plot_losses

Every executed notebook is saved as OUT/<study>/notebooks/NN_name[_suffix].ipynb and .html.
It stops at the first failing notebook and names it. Running it again resumes: preprocessing
finds its finished sets, training continues from the latest checkpoints (or is already
finished); nothing is deleted (an executed notebook about to be replaced is first moved to
OUT/<study>/notebooks/history/).

With no --coco/--celeba it runs the BUILT-IN DEMO: two small image sets cut from photos that
ship inside scikit-image and matplotlib (`upsampler demo-data`; "broad" plays COCO, "narrow"
- grey ground-surface textures - plays CelebA), the demo profile, and the pretrained
VGG16-HED content network that works offline. Every output of the demo says it is a demo.
About 10-15 minutes on a 2-core CPU.

Options:
  --profile NAME               config profile: paper, original, study-cpu, demo or smoke
                               (default: demo for the built-in demo, else paper)
  --coco PATH                  COCO images: a folder or a .zip (Model A's training data); several
                               folders joined with ':' (e.g. train291:general)
  --celeba PATH                CelebA images: a folder or a .zip (Model B's data and the test set)
  --coco-groups CSV            split COCO by group (CSV with columns file and group)
  --celeba-groups CSV          split CelebA by group, e.g. by identity (columns file and
                               celeba_identity or group), or CelebA's identity_CelebA.txt. Default:
                               groups.csv or identity_CelebA.txt in or beside the folder, or
                               meta/<folder>_celeba_identity.csv beside it
  --out DIR                    output root (default: outputs); results go to DIR/<study>/
  --study NAME                 study folder under --out (default: demo for the demo, else the profile)
  --epochs N                   adversarial epochs per model (default: the profile's)
  --pretrain-epochs N          MSE pre-training epochs per model (default: the profile's)
  --content-network vgg19|vgg16-hed|untrained
                               network of the content loss (default: the profile's; vgg16-hed is
                               pretrained and offline, untrained is for tests and labelled everywhere)
  --extractor none|fid-inception|inception-imagenet|inception-untrained
                               Inception for FID/KID (default: fid-inception for the paper and
                               original profiles, else none; set UPSAMPLER_FID_INCEPTION to a local
                               copy of the TF-GAN Inception module when offline)
  --extractor-size N           extractor input size in px (default 299; smaller is for tests only)
  --limit N                    use at most N images of each dataset (passed to preprocess)
  --seed-log PATH              also plot one of the original study's loss logs (repeatable), e.g.
                               ../shared/data/seed-logs/COCO_loss.txt
  --set SECTION.FIELD=VALUE    config override for both models (repeatable)
  -h, --help                   show this help
EOF
}

die() { echo "run_all: error: $*" >&2; exit 2; }

profile="" coco="" celeba="" coco_groups="" celeba_groups="" out="outputs" study="" epochs="" pretrain=""
vgg="" extractor="" extractor_size="" limit=""
seed_logs=() overrides=()
while [[ $# -gt 0 ]]; do
  arg="$1"
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --*=*) set -- "${arg%%=*}" "${arg#*=}" "${@:2}"; continue ;;
  esac
  [[ $# -ge 2 ]] || die "$arg needs a value (see --help)"
  value="$2"
  case "$arg" in
    --profile) profile="$value" ;;
    --coco) coco="$value" ;;
    --celeba) celeba="$value" ;;
    --coco-groups) coco_groups="$value" ;;
    --celeba-groups) celeba_groups="$value" ;;
    --out) out="$value" ;;
    --study) study="$value" ;;
    --epochs) epochs="$value" ;;
    --pretrain-epochs) pretrain="$value" ;;
    --content-network) vgg="$value" ;;
    --extractor) extractor="$value" ;;
    --extractor-size) extractor_size="$value" ;;
    --limit) limit="$value" ;;
    --seed-log) seed_logs+=("$value") ;;
    --set) overrides+=("$value") ;;
    *) die "unknown option $arg (see --help)" ;;
  esac
  shift 2
done

is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }
[[ -z "$profile" || "$profile" =~ ^(demo|paper|original|study-cpu|smoke)$ ]] \
  || die "--profile must be paper, original, study-cpu, demo or smoke, got '$profile'"
[[ -z "$vgg" || "$vgg" =~ ^(vgg19|vgg16-hed|untrained)$ ]] || die "--content-network must be vgg19, vgg16-hed or untrained, got '$vgg'"
[[ -z "$extractor" || "$extractor" =~ ^(none|fid-inception|inception-imagenet|inception-untrained)$ ]] \
  || die "--extractor must be none, fid-inception, inception-imagenet or inception-untrained, got '$extractor'"
for pair in "epochs:$epochs" "pretrain-epochs:$pretrain" "limit:$limit" "extractor-size:$extractor_size"; do
  [[ -z "${pair#*:}" ]] || is_int "${pair#*:}" || die "--${pair%%:*} must be a whole number, got '${pair#*:}'"
done
if [[ -n "$coco" && -z "$celeba" ]] || [[ -z "$coco" && -n "$celeba" ]]; then
  die "give both --coco and --celeba (or neither, for the built-in demo)"
fi
for path in ${coco//:/ } ${celeba//:/ } "$coco_groups" "$celeba_groups" ${seed_logs[@]+"${seed_logs[@]}"}; do
  [[ -z "$path" || -e "$path" ]] || die "$path: no such file or folder"
done

demo=0
if [[ -z "$coco" ]]; then
  demo=1
  profile="${profile:-demo}"
  extractor="${extractor:-none}"
  study="${study:-demo}"
  faces=False
else
  profile="${profile:-paper}"
  [[ "$profile" =~ ^(paper|original)$ ]] && extractor="${extractor:-fid-inception}"
  extractor="${extractor:-none}"
  study="${study:-$profile}"
  faces=True
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
abspath() {  # one path, or several joined with ':'
  [[ -z "$1" ]] && return 0
  local out="" part
  IFS=':' read -ra parts <<< "$1"
  for part in "${parts[@]}"; do out+="${out:+:}$(realpath -m -- "$part")"; done
  echo "$out"
}
out="$(abspath "$out")"; coco="$(abspath "$coco")"; celeba="$(abspath "$celeba")"
coco_groups="$(abspath "$coco_groups")"; celeba_groups="$(abspath "$celeba_groups")"
abs_logs=()
for log in ${seed_logs[@]+"${seed_logs[@]}"}; do abs_logs+=("$(abspath "$log")"); done
cd "$root"

./scripts/ensure_venv.sh "cpu,test,notebooks,instruments"
py="$root/.venv/bin/python"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}" MPLBACKEND=Agg PYTHONHASHSEED=0 PYTHONUNBUFFERED=1

study_root="$out/$study"
nb_dir="$study_root/notebooks"
mkdir -p "$nb_dir"
start_all=$SECONDS
echo "run_all: profile $profile, study $study_root$([[ $demo == 1 ]] && echo ' (BUILT-IN DEMO)')"

if [[ $demo == 1 ]]; then
  [[ "$profile" != "paper" ]] || die "the built-in demo images are too small for the paper profile (176 px); give --coco and --celeba"
  size="$("$py" -c "from upsampler.config import get_profile; print(max(64, get_profile('$profile').data.hr_size))")"
  demo_src="$study_root/demo-data"
  if [[ -f "$demo_src/broad/README.txt" && -f "$demo_src/narrow/README.txt" ]]; then
    echo "run_all: demo data already in $demo_src"
  else
    "$py" -m upsampler.cli demo-data "$demo_src" --size "$size"
  fi
  coco="$demo_src/broad"; celeba="$demo_src/narrow"
  cat > "$study_root/LABEL.txt" <<EOF
DEMO: everything under this folder comes from ./run_all.sh's built-in demo - small image sets cut from
photos bundled with scikit-image and matplotlib (grey ground textures in the faces' role), and the '$profile'
profile. It demonstrates the pipeline; it is not a result of the study.
EOF
fi

# papermill parameters shared by every notebook
common=(-p output_root "$out" -p study "$study")
progress=(-p progress False)
overrides_yaml="overrides: []"
if [[ ${#overrides[@]} -gt 0 ]]; then
  overrides_yaml="$("$py" -c 'import json, sys; print("overrides: " + json.dumps(sys.argv[1:]))' "${overrides[@]}")"
fi

run_nb() {  # run_nb NOTEBOOK OUTPUT_NAME [papermill args...]
  local notebook="$1" name="$2"; shift 2
  local executed="$nb_dir/$name.ipynb" html="$nb_dir/$name.html" t0=$SECONDS stamp
  for old in "$executed" "$html"; do
    if [[ -e "$old" ]]; then
      stamp="$(date -r "$old" +%Y%m%d-%H%M%S)"
      mkdir -p "$nb_dir/history"
      mv -- "$old" "$nb_dir/history/$(basename "${old%.*}").$stamp.${old##*.}"
    fi
  done
  echo "run_all: === $name ($notebook) ==="
  if ! "$root/.venv/bin/papermill" --cwd "$root" --no-progress-bar --log-output \
        "$root/notebooks/$notebook" "$executed" "${common[@]}" "$@"; then
    "$root/.venv/bin/jupyter" nbconvert --to html --log-level ERROR "$executed" >/dev/null 2>&1 || true
    echo "run_all: FAILED at notebook $name (notebooks/$notebook) after $((SECONDS - t0)) s." >&2
    echo "run_all: the executed copy with the error is $executed (and .html); fix the cause and run again to resume." >&2
    exit 1
  fi
  "$root/.venv/bin/jupyter" nbconvert --to html --log-level ERROR "$executed" >/dev/null
  echo "run_all: --- $name done in $((SECONDS - t0)) s -> $executed, $html"
}

prep_args=(-p profile "$profile" -y "$overrides_yaml")
[[ -z "$limit" ]] || prep_args+=(-p limit "$limit")
run_nb 01_preprocess.ipynb 01_preprocess_coco "${prep_args[@]}" -p dataset coco -p source "$coco" \
  -p groups_csv "${coco_groups:-auto}"
run_nb 01_preprocess.ipynb 01_preprocess_celeba "${prep_args[@]}" -p dataset celeba -p source "$celeba" \
  -p groups_csv "${celeba_groups:-auto}"

train_args=(-p profile "$profile" -y "$overrides_yaml" "${progress[@]}")
[[ -z "$epochs" ]] || train_args+=(-p epochs "$epochs")
[[ -z "$pretrain" ]] || train_args+=(-p pretrain_epochs "$pretrain")
[[ -z "$vgg" ]] || train_args+=(-p content_network "$vgg")
run_nb 02_train.ipynb 02_train_model_a "${train_args[@]}" -p model model_a -p model_name "Model A" -p dataset coco
run_nb 02_train.ipynb 02_train_model_b "${train_args[@]}" -p model model_b -p model_name "Model B" -p dataset celeba

eval_args=(-p faces "$faces")
[[ "$extractor" == "none" ]] || eval_args+=(-p extractor "$extractor")
[[ -z "$extractor_size" ]] || eval_args+=(-p input_size "$extractor_size")
run_nb 04_evaluate.ipynb 04_evaluate "${eval_args[@]}"

logs_yaml="seed_logs: []"
if [[ ${#abs_logs[@]} -gt 0 ]]; then
  logs_yaml="$("$py" -c 'import json, sys; print("seed_logs: " + json.dumps(sys.argv[1:]))' "${abs_logs[@]}")"
fi
run_nb 05_plot_losses.ipynb 05_plot_losses -y "$logs_yaml"

echo "run_all: finished in $((SECONDS - start_all)) s. Results in $study_root:"
echo "  tables/evaluation_metrics.md, figures/, runs/model_a, runs/model_b, notebooks/*.html"
if [[ -f "$study_root/tables/evaluation_metrics.md" ]]; then
  sed -n '/^| Method/,$p' "$study_root/tables/evaluation_metrics.md"
fi
[[ $demo == 0 ]] || echo "run_all: this was the BUILT-IN DEMO: its outputs demonstrate the pipeline, they are not results of the study."
