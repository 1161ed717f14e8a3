"""Fix 1 benchmark (GPU): accelerator memory taken by `Trainer._load_best_model` reloading the best LoRA adapter.

For each LoRA rank: a Llama model + LoRA adapter on the GPU is trained 3 steps with an eval and a checkpoint
at every step (the best one is not the last), and `_load_best_model` is measured: the extra bytes it
allocates above what was allocated when it started (peak - start) and the peak. Prints one JSON line;
without CUDA it prints "skipped: no CUDA" and a JSON line saying so.

Usage: gpu_load_best.py WORK_DIR RANKS_JSON
"""

import json
import os
import sys


def main(work_dir: str, ranks_json: str) -> None:
    import torch

    if not torch.cuda.is_available():
        print("skipped: no CUDA")
        print(json.dumps({"skipped": "no CUDA"}))
        return
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments, set_seed

    score_per_step = {1: 0.5, 2: 1.0, 3: 0.0}  # best checkpoint: step 2, not the last one
    results = []
    for rank in json.loads(ranks_json):
        set_seed(0)
        config = LlamaConfig(vocab_size=1024, hidden_size=2048, intermediate_size=4096, num_hidden_layers=2,
                             num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=64, use_cache=False)
        model = get_peft_model(LlamaForCausalLM(config),
                               LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear"))
        adapter_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, config.vocab_size, (8, 16), generator=generator)
        data = [{"input_ids": x, "labels": x.clone()} for x in ids]
        trainer = None

        def compute_metrics(_):
            return {"score": score_per_step[trainer.state.global_step]}

        out = os.path.join(work_dir, f"r{rank}")
        args = TrainingArguments(
            output_dir=out, max_steps=3, per_device_train_batch_size=2, per_device_eval_batch_size=2,
            learning_rate=1e-4, eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1,
            save_only_model=True, load_best_model_at_end=True, metric_for_best_model="score",
            greater_is_better=True, report_to="none", disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=data[:6], eval_dataset=data[6:],
                          compute_metrics=compute_metrics)
        original = trainer._load_best_model
        measured = {}

        def measured_load_best_model():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
            original()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
            measured.update(start_bytes=start, peak_bytes=peak, extra_bytes=peak - start,
                            end_bytes=torch.cuda.memory_allocated())

        trainer._load_best_model = measured_load_best_model
        trainer.train()
        lora_dtypes = sorted({str(p.dtype) for n, p in trainer.model.named_parameters() if "lora_" in n})
        results.append({"lora_rank": rank, "adapter_bytes": adapter_bytes, "lora_dtypes": lora_dtypes, **measured})
        trainer = model = None  # free both before the next rank (compute_metrics reads trainer)
        torch.cuda.empty_cache()
    print(json.dumps({"gpu": torch.cuda.get_device_name(0), "results": results}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
