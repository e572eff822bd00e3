"""lm-evaluation-harness scores `ingot serve` through its `local-completions` model, offline: a multiple-choice
(loglikelihood) task and a generate-until task on a JSONL dataset written here; its loglikelihoods are the engine's
own prompt logprobs, and the float32 reference's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

from ingot.artifacts.integrity import check_artifact
from ingot.benchmark.launch import free_port
from ingot.compile.verify.references import reference_model
from ingot.runtime.sampling_params import SamplingParams
from tests.server.helpers import eventually

QUESTIONS = [
    {"question": "The quick brown fox jumps over the lazy", "choices": ["dog", "code", "fox"], "answer": 0},
    {"question": "Compilers turn programs into fast", "choices": ["code", "letters"], "answer": 0},
]
GENERATE = [{"question": "def main():\n    return", "answer": " sum"}]
MULTIPLE_CHOICE_TASK = """\
task: ingot_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""
GENERATE_TASK = """\
task: ingot_generate
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
"""


@pytest.fixture(scope="module")
def served_artifact(compiled, tmp_path_factory):
    """`ingot serve` on the tiny llama artifact, on 127.0.0.1, as a user runs it."""
    path = compiled("llama").path
    port = free_port()
    env = dict(os.environ, INGOT_CACHE_DIR=str(tmp_path_factory.mktemp("serve-cache")))
    command = [sys.executable, "-m", "ingot.cli", "serve", str(path), "--no-compile", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health").status_code == 200
        except httpx.TransportError:
            return process.poll() is not None

    try:
        assert eventually(healthy, timeout=300) and process.poll() is None, process.stderr.read()
        model = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
        yield path, url, model
    finally:
        process.terminate()
        process.wait(timeout=60)


def run_lm_eval(url: str, model: str, tokenizer: Path, work: Path) -> dict[str, list[dict]]:
    """The harness's CLI, offline, on the two tasks; each task's logged samples."""
    (work / "choice.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (work / "generate.jsonl").write_text("".join(json.dumps(q) + "\n" for q in GENERATE))
    tasks = work / "tasks"
    tasks.mkdir()
    (tasks / "choice.yaml").write_text(MULTIPLE_CHOICE_TASK.format(data=work / "choice.jsonl"))
    (tasks / "generate.yaml").write_text(GENERATE_TASK.format(data=work / "generate.jsonl"))
    model_args = ",".join([
        f"model={model}", f"base_url={url}/v1/completions", f"tokenizer={tokenizer}", "tokenizer_backend=huggingface",
        "tokenized_requests=True", "max_length=256", "num_concurrent=1", "max_retries=1",
    ])  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_CACHE=str(work / "datasets"), OPENAI_API_KEY="none")  # fmt: skip
    command = [
        sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args", model_args,
        "--tasks", "ingot_choice,ingot_generate", "--include_path", str(tasks), "--output_path", str(work / "out"),
        "--log_samples",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    samples = {}
    for task in ("ingot_choice", "ingot_generate"):
        (found,) = (work / "out").rglob(f"samples_{task}_*.jsonl")
        samples[task] = [json.loads(line) for line in found.read_text().splitlines()]
    return samples


def test_lm_eval_scores_ingot_with_the_engines_loglikelihoods(served_artifact, engine, tmp_path):
    path, url, model = served_artifact
    manifest = check_artifact(path)
    samples = run_lm_eval(url, model, path / manifest.tokenizer.directory, tmp_path)
    reference = reference_model(path, manifest)
    tokenizer = engine.tokenizer

    choice = sorted(samples["ingot_choice"], key=lambda s: s["doc_id"])
    assert len(choice) == len(QUESTIONS)
    for sample, question in zip(choice, QUESTIONS):
        assert len(sample["filtered_resps"]) == len(question["choices"])
        for (loglikelihood, is_greedy), option in zip(sample["filtered_resps"], question["choices"]):
            context = tokenizer(question["question"], add_special_tokens=False).input_ids
            whole = tokenizer(question["question"] + " " + option, add_special_tokens=False).input_ids
            assert whole[: len(context)] == context
            (direct,) = engine.generate([whole], SamplingParams(max_tokens=0, prompt_logprobs=1))
            scored = direct.prompt_logprobs[len(context) :]
            assert float(loglikelihood) == pytest.approx(sum(e.logprob for e in scored), abs=1e-4)
            assert (is_greedy in (True, "True")) == all(e.rank == 1 for e in scored)
            with torch.no_grad():
                logits = reference(torch.tensor([whole])).logits[0].float().log_softmax(-1)
            expected = sum(float(logits[p - 1, whole[p]]) for p in range(len(context), len(whole)))
            assert float(loglikelihood) == pytest.approx(expected, abs=1e-3)

    (generated,) = samples["ingot_generate"]
    prompt = tokenizer(GENERATE[0]["question"], add_special_tokens=False).input_ids
    eos = tokenizer.decode([manifest.tokenizer.eos_token_ids[0]])
    (direct,) = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=6, stop=["\n", eos]))
    assert generated["resps"][0][0] == direct.text
