#!/usr/bin/env python3
"""Summarise `alignsharp demo` run directories as the markdown tables of docs/results.md.

    scripts/demo-results.py RUN_DIR [RUN_DIR ...]

Reads each RUN_DIR/results.json and prints, per run, the policy table and the issue's acceptance checks
(reward model gold agreement >= 75 %; PPO and DPO gold win rate vs SFT >= 65 % with fluency within 5 points of
SFT's; beta = 0 PPO: higher proxy score but lower gold reward than PPO). Exits 1 when a check fails for a run
with the default settings (--quick runs are reported, not judged).
Only the standard library: the product does not need Python, this is a documentation helper.
"""
import json
import sys

POLICIES = ["sft", "best_of_n", "ppo", "dpo", "ppo_beta0"]


def checks(r):
    p = r["policies"]
    sft = p["sft"]

    def beats_sft(name):
        m = p[name]
        return m["gold_win_rate_vs_sft"] >= 0.65 and abs(m["fluency"] - sft["fluency"]) <= 0.05

    return {
        "reward model agreement >= 75 %": r["reward_model_gold_agreement"] >= 0.75,
        "PPO win rate >= 65 %, fluency within 5 pts": beats_sft("ppo"),
        "DPO win rate >= 65 %, fluency within 5 pts": beats_sft("dpo"),
        "beta = 0: proxy above PPO's, gold below": p["ppo_beta0"]["proxy_score_mean"] > p["ppo"]["proxy_score_mean"]
        and p["ppo_beta0"]["gold_reward_mean"] < p["ppo"]["gold_reward_mean"],
    }


def main(dirs):
    ok = True
    for d in dirs:
        with open(f"{d}/results.json") as f:
            r = json.load(f)
        total = sum(r["phase_seconds"].values())
        print(f"### {r['settings']} settings, seed {r['seed']} ({total:.0f} s of phases)\n")
        print(f"Reward model gold agreement {r['reward_model_gold_agreement']:.1%} on {r['reward_model_eval_pairs']} "
              f"held-out pairs (one annotator {r['annotator_gold_agreement']:.1%}, "
              f"ceiling {r['reward_model_agreement_ceiling']:.1%}).\n")
        print("| policy | gold reward | ±95 % | win rate vs SFT | proxy score | KL from SFT | fluency | distinct-2 |")
        print("|---|---|---|---|---|---|---|---|")
        for name in POLICIES:
            m = r["policies"][name]
            print(f"| {name} | {m['gold_reward_mean']:.3f} | {m['gold_reward_ci95']:.3f} | "
                  f"{m['gold_win_rate_vs_sft']:.1%} | {m['proxy_score_mean']:.3f} | {m['kl_from_sft']:.3f} | "
                  f"{m['fluency']:.1%} | {m['distinct_2']:.3f} |")
        print()
        # The acceptance is stated for the default settings; --quick only has to show the direction of the effects.
        binding = r["settings"] == "default"
        for name, passed in checks(r).items():
            ok &= passed or not binding
            print(f"- {'pass' if passed else 'FAIL' if binding else 'not met (quick)'}: {name}")
        print()
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
