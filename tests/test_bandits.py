"""Module-selection policies: determinism, exact resume, hand-computed statistics, option checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from optima.bandits import POLICIES, make_arms, make_policy, policy_options
from optima.errors import CheckpointError, ConfigError

# the oracle is played by the trainer (optima.distill.oracle), not by select()
SINGLE_ARM = [name for name, cls in POLICIES.items() if not cls.plays_all and name != "oracle"]
OPTIONS = {"fixed": {"arm": 1}, "replay": {"counts": [70, 70, 60]}}  # options a policy cannot do without


def rewards_for(seed: int = 123, rounds: int = 200, n_arms: int = 3) -> np.ndarray:
    """Noisy rewards whose best arm changes halfway (so every policy does something non-trivial)."""
    rng = np.random.default_rng(seed)
    means = np.linspace(0.01, 0.03, n_arms)
    table = np.where(np.arange(rounds)[:, None] < rounds // 2, means, means[::-1])
    return table + 0.01 * rng.standard_normal((rounds, n_arms))


def play(policy, rewards: np.ndarray) -> list[int]:
    chosen = []
    for row in rewards.tolist():
        arm = policy.select()
        policy.update(arm, row[arm])
        chosen.append(arm)
    return chosen


def test_registry_names_and_options():
    assert set(POLICIES) == {"optima", "uniform", "layerwise", "fixed", "ts", "discounted_ts",
                             "sliding_window_ts", "ucb", "exp3", "replay", "oracle"}
    assert [n for n, c in POLICIES.items() if c.plays_all] == ["layerwise"]
    assert set(policy_options("optima")) >= {"window", "gamma", "scale", "prior_scale", "window_unit"}
    assert policy_options("discounted_ts")["gamma"] == 0.9
    assert policy_options("uniform") == {}
    for name in POLICIES:  # defaults are plain config values
        json.dumps(policy_options(name))


@pytest.mark.parametrize("name", SINGLE_ARM)
def test_same_seed_same_choices(name):
    rewards = rewards_for()
    first = play(make_policy(name, 3, 7, **OPTIONS.get(name, {})), rewards)
    second = play(make_policy(name, 3, 7, **OPTIONS.get(name, {})), rewards)
    assert first == second
    if name in ("uniform", "exp3", "optima", "ts", "discounted_ts", "sliding_window_ts"):
        other = play(make_policy(name, 3, 8, **OPTIONS.get(name, {})), rewards)
        assert other != first, "a different seed should change a randomised policy's choices"


@pytest.mark.parametrize("name", [name for name in POLICIES if name != "oracle"])
def test_state_dict_round_trip_continues_identically(name):
    rewards = rewards_for(rounds=120)
    original = make_policy(name, 3, 5, **OPTIONS.get(name, {}))
    if original.plays_all:
        for row in rewards[:60].tolist():
            assert original.select_all() == [0, 1, 2]
            original.update(0, row[0])
        state = json.loads(json.dumps(original.state_dict()))
        restored = make_policy(name, 3, 99)
        restored.load_state_dict(state)
        assert restored.state_dict() == original.state_dict()
        return
    play(original, rewards[:60])
    state = json.loads(json.dumps(original.state_dict()))  # through JSON, as in a checkpoint
    restored = make_policy(name, 3, 99, **OPTIONS.get(name, {}))  # a different seed: the state must win
    restored.load_state_dict(state)
    assert restored.state_dict() == original.state_dict()
    assert play(restored, rewards[60:]) == play(original, rewards[60:])
    assert restored.state_dict() == original.state_dict()


def test_load_state_dict_rejects_other_policy_or_options():
    state = make_policy("optima", 3, 0).state_dict()
    with pytest.raises(CheckpointError, match="gamma"):
        make_policy("optima", 3, 0, window=None, gamma=0.9).load_state_dict(state)
    with pytest.raises(CheckpointError, match="'ts'"):
        make_policy("optima", 3, 0).load_state_dict(make_policy("ts", 3, 0).state_dict())
    with pytest.raises(CheckpointError, match="4 arms"):
        make_policy("optima", 4, 0).load_state_dict(state)


# ---------------------------------------------------------------------- hand-computed statistics
RAW = {"credit": "raw", "warmup_rounds": 0}  # the plain Gaussian model: rewards credited as observed, all recorded


def test_round_window_statistics_by_hand():
    policy = make_policy("optima", 3, 0, window=3, gamma=None, window_unit="rounds", scale=1.0, **RAW)  # last 3 rounds
    for arm, reward in [(0, 1.0), (1, 2.0), (0, 3.0), (2, 4.0), (2, 5.0)]:
        policy.update(arm, reward)
    # left in the window: (0, 3.0), (2, 4.0), (2, 5.0) -- arm 1 has no recent reward
    stats = policy.arm_statistics()
    assert stats["count"] == [1.0, 0.0, 2.0]
    assert stats["mean"][0] == 3.0 and math.isnan(stats["mean"][1]) and stats["mean"][2] == 4.5
    # pooled recent rewards 3, 4, 5: centre 4, spread sqrt(2/3); posterior N(Z/(n+1), 1/(n+1))
    spread = math.sqrt(2.0 / 3.0)
    means, stds = policy.posterior()
    assert means == pytest.approx([(-1.0 / spread) / 2, 0.0, (1.0 / spread) / 3])
    assert stds == pytest.approx([1 / math.sqrt(2), 1.0, 1 / math.sqrt(3)])


def test_pull_window_statistics_by_hand():
    policy = make_policy("optima", 3, 0, window=2, gamma=None, window_unit="pulls", **RAW)  # each arm's last 2
    for arm, reward in [(0, 1.0), (0, 2.0), (1, 5.0), (0, 3.0), (2, -1.0)]:
        policy.update(arm, reward)
    stats = policy.arm_statistics()
    assert stats["count"] == [2.0, 1.0, 1.0]
    assert stats["mean"] == [2.5, 5.0, -1.0]


def test_prior_and_scale_options_by_hand():
    policy = make_policy("optima", 2, 0, window=10, gamma=None, scale=0.5, prior_scale=2.0, normalise="none", **RAW)
    policy.update(0, 1.0)
    policy.update(0, 3.0)
    # rho = (0.5 / 2)^2 = 1/16: arm 0 N(4 / (2 + 1/16), 0.25 / (2 + 1/16)); arm 1 the prior N(0, 4)
    means, stds = policy.posterior()
    assert means == pytest.approx([4 / (2 + 1 / 16), 0.0])
    assert stds == pytest.approx([0.5 / math.sqrt(2 + 1 / 16), 2.0])


@pytest.mark.parametrize("name, options", [("discounted_ts", {"gamma": 0.5}),
                                           ("optima", {"window": None, "gamma": 0.5, **RAW})])
def test_discounted_statistics_decay_every_arm_by_hand(name, options):
    policy = make_policy(name, 3, 0, **options)
    policy.update(0, 1.0)
    policy.update(1, 2.0)
    policy.update(1, 4.0)
    policy.update(2, -2.0)
    # arm 0 is never played again, but its statistics still halve every round
    history = policy.history
    assert history.counts == [0.125, 0.75, 1.0]
    assert history.sums == [0.125, 0.5 * (0.5 * 2.0 + 4.0), -2.0]
    assert history.squares == [0.125, 0.5 * (0.5 * 4.0 + 16.0), 4.0]
    count, mean, var = history.pooled()
    assert count == pytest.approx(1.875)
    assert mean == pytest.approx((0.125 + 2.5 - 2.0) / 1.875)
    assert var == pytest.approx((0.125 + 9.0 + 4.0) / 1.875 - mean**2)


def test_stationary_ts_keeps_everything():
    policy = make_policy("ts", 2, 0, normalise="none")
    for reward in [1.0, 2.0, 3.0, 4.0]:
        policy.update(1, reward)
    stats = policy.arm_statistics()
    assert stats["count"] == [0.0, 4.0] and math.isnan(stats["mean"][0]) and stats["mean"][1] == 2.5
    means, stds = policy.posterior()
    assert means == pytest.approx([0.0, 10.0 / 5.0]) and stds == pytest.approx([1.0, 1 / math.sqrt(5)])


def test_sliding_window_ts_forgets_after_window_rounds():
    policy = make_policy("sliding_window_ts", 2, 0, window=2)
    policy.update(0, 1.0)
    policy.update(1, 1.0)
    policy.update(1, 1.0)
    assert policy.arm_statistics()["count"] == [0.0, 2.0]


def test_normalised_choices_do_not_depend_on_reward_scale_or_offset():
    rewards = rewards_for(rounds=150)
    for options in ({}, {"gamma": None, "window": 5}, {"gamma": None, "window": 5, "window_unit": "pulls"}):
        reference = play(make_policy("optima", 3, 3, **options), rewards)
        assert play(make_policy("optima", 3, 3, **options), rewards * 2.0**-12) == reference
        assert play(make_policy("optima", 3, 3, **options), rewards + 3.0) == reference


def test_initial_plays_round_robin():
    policy = make_policy("optima", 4, 0, initial_plays=2, initial_order="index", warmup_rounds=0)
    chosen = []
    for _ in range(8):
        chosen.append(policy.select())
        policy.update(chosen[-1], 0.0)
    assert chosen == [0, 1, 2, 3, 0, 1, 2, 3]


def test_initial_order_is_drawn_per_seed_and_warmup_rewards_are_not_recorded():
    firsts = set()
    for seed in range(12):
        policy = make_policy("optima", 3, seed, warmup_rounds=2)
        chosen = []
        for _ in range(5):
            chosen.append(policy.select())
            policy.update(chosen[-1], 100.0 if len(chosen) <= 2 else 1.0)
        order = policy.order
        assert chosen == [order[0], order[1], order[0], order[1], order[2]]  # warm-up, then the round robin
        assert policy.history.counts == [1.0, 1.0, 1.0]  # the two warm-up rewards (100) were dropped
        assert policy.history.sums == [1.0, 1.0, 1.0]
        firsts.add(order[0])
    assert firsts == {0, 1, 2}  # no module is always played first


def test_detrended_credit_does_not_depend_on_when_an_arm_was_played():
    """Identical arms under a shared downward trend: the arm played first (at the largest rewards) must not
    look better. Raw credit ranks arms by when they were played; detrended credit does not."""
    trend = [0.1 * 0.8 ** t for t in range(9)]
    arms = [0, 0, 0, 1, 1, 1, 2, 2, 2]  # arm 0 in the steep early rounds, arm 2 last
    raw = make_policy("optima", 3, 0, window=None, **RAW)
    detrended = make_policy("optima", 3, 0, window=None, warmup_rounds=0)
    for policy in (raw, detrended):
        for arm, reward in zip(arms, trend):
            policy.update(arm, reward)
    raw_means, _ = raw.posterior()
    assert raw_means[0] > raw_means[1] > raw_means[2]
    # a geometric trend is not linear, so the fit leaves residuals (here a fifth of raw credit's spread,
    # over a 9-round, 6x fall); an exactly linear trend leaves none
    means, _ = detrended.posterior()
    assert max(means) - min(means) < 0.25 * (raw_means[0] - raw_means[2])
    linear = make_policy("optima", 3, 0, window=None, warmup_rounds=0)
    for t, arm in enumerate(arms):
        linear.update(arm, 1.0 - 0.1 * t)
    means, _ = linear.posterior()
    assert max(means) - min(means) < 0.05  # only the priors' slight shrinkage (raw credit: about 2 units)


def test_detrended_credit_finds_the_better_arm_under_a_trend():
    """Arm 1 is better at every time, but arm 0 was played earlier, when all rewards were larger."""
    policy = make_policy("optima", 2, 0, window=None, warmup_rounds=0)
    for t, arm in enumerate([0, 0, 0, 0, 1, 0, 1, 1, 1, 1]):
        policy.update(arm, 1.0 - 0.1 * t + 0.05 * arm)
    means, _ = policy.posterior()
    assert means[1] > means[0]
    raw = make_policy("optima", 2, 0, window=None, **RAW)
    for t, arm in enumerate([0, 0, 0, 0, 1, 0, 1, 1, 1, 1]):
        raw.update(arm, 1.0 - 0.1 * t + 0.05 * arm)
    assert raw.posterior()[0][0] > raw.posterior()[0][1]  # raw credit gets it backwards


def test_optima_follows_the_better_arm():
    rng = np.random.default_rng(0)
    policy = make_policy("optima", 3, 0)
    chosen = []
    for _ in range(300):
        arm = policy.select()
        policy.update(arm, [0.010, 0.012, 0.020][arm] + 0.002 * float(rng.standard_normal()))
        chosen.append(arm)
    assert chosen[100:].count(2) > 0.8 * 200


# ---------------------------------------------------------------------- baselines behave as named
def test_fixed_always_plays_its_arm():
    policy = make_policy("fixed", 3, 0, arm=2)
    assert play(policy, rewards_for(rounds=50)) == [2] * 50


def test_uniform_draws_from_its_own_generator():
    policy = make_policy("uniform", 3, 11)
    chosen = play(policy, rewards_for(rounds=3000))
    expected = np.random.default_rng(11).integers(3, size=1)  # first draw of the same generator
    assert chosen[0] == int(expected[0])
    counts = np.bincount(chosen, minlength=3)
    assert counts.min() > 900 and counts.max() < 1100  # ~1000 each (6 sigma is about 155)
    before = np.random.get_state()[1].copy()
    play(make_policy("uniform", 3, 11), rewards_for(rounds=20))
    assert (np.random.get_state()[1] == before).all(), "the global numpy random state must stay untouched"


def test_layerwise_plays_every_arm():
    policy = make_policy("layerwise", 3, 0)
    assert policy.plays_all
    assert policy.select_all() == [0, 1, 2]
    with pytest.raises(TypeError, match="select_all"):
        policy.select()
    policy.update(1, 0.5)  # validated, learns nothing
    assert policy.select_all() == [0, 1, 2]
    with pytest.raises(ValueError, match="out of range"):
        policy.update(3, 0.5)


def test_ucb_by_hand():
    policy = make_policy("ucb", 3, 0)
    for arm, reward in [(0, 0.0), (1, 0.5), (2, 1.0)]:
        assert policy.select() == arm  # each arm once, in order
        policy.update(arm, reward)
    assert policy.select() == 2  # equal bonuses, best mean
    policy.update(2, 0.0)
    # means rescaled to [0, 1]: 0, 0.5, 0.5; bonuses sqrt(2 ln 4 / n): n = 1, 1, 2
    index = [0 + math.sqrt(2 * math.log(4)), 0.5 + math.sqrt(2 * math.log(4)), 0.5 + math.sqrt(math.log(4))]
    assert policy.select() == int(np.argmax(index)) == 1


def test_exp3_by_hand():
    policy = make_policy("exp3", 2, 0, exploration=0.2, normalise="none")
    assert policy.probabilities() == pytest.approx([0.5, 0.5])
    policy.update(0, 1.0)  # weight of arm 0 grows by exp(0.2 * 1 / (0.5 * 2))
    w = math.exp(0.2)
    assert policy.probabilities() == pytest.approx([0.8 * w / (w + 1) + 0.1, 0.8 / (w + 1) + 0.1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        policy.update(0, 1.5)


# ---------------------------------------------------------------------- invalid input names the culprit
@pytest.mark.parametrize("name, options, culprit", [
    ("optima", {"windw": 3}, "unknown option 'windw' for policy 'optima' (allowed: "),
    ("optima", {"window": 0, "gamma": None}, "'window'"),
    ("optima", {"window": 8, "gamma": 0.9}, "'window' (8) and 'gamma' (0.9)"),
    ("optima", {"window": 2.5, "gamma": None}, "'window'"),
    ("optima", {"gamma": 0.0}, "'gamma'"),
    ("optima", {"gamma": 1.5}, "'gamma'"),
    ("discounted_ts", {"gamma": -0.1}, "'gamma'"),
    ("sliding_window_ts", {"window": 0}, "'window'"),
    ("optima", {"scale": 0}, "'scale'"),
    ("optima", {"scale": "1e-3"}, "'scale'"),
    ("optima", {"prior_scale": -1.0}, "'prior_scale'"),
    ("optima", {"normalise": "zscore"}, "'normalise'"),
    ("optima", {"window_unit": "steps"}, "'window_unit'"),
    ("optima", {"initial_plays": -1}, "'initial_plays'"),
    ("fixed", {}, "'arm'"),
    ("fixed", {"arm": 3}, "'arm'"),
    ("fixed", {"arm": "vision"}, "'arm'"),
    ("ucb", {"exploration": -1.0}, "'exploration'"),
    ("exp3", {"exploration": 0.0}, "'exploration'"),
    ("uniform", {"window": 3}, "unknown option 'window' for policy 'uniform'"),
    ("thompson", {}, "unknown policy 'thompson'"),
])
def test_invalid_options_raise_config_error_naming_the_option(name, options, culprit):
    with pytest.raises(ConfigError) as info:
        make_policy(name, 3, 0, **options)
    assert culprit in str(info.value)


@pytest.mark.parametrize("n_arms", [0, -1, 1.5, True])
def test_invalid_n_arms(n_arms):
    with pytest.raises(ConfigError, match="n_arms"):
        make_policy("optima", n_arms, 0)


@pytest.mark.parametrize("name", SINGLE_ARM)
@pytest.mark.parametrize("arm, reward, culprit", [
    (3, 0.1, "arm 3 is out of range"), (-1, 0.1, "arm -1 is out of range"), (1.0, 0.1, "arm must be"),
    (0, float("nan"), "reward must be finite"), (0, float("inf"), "reward must be finite"), (0, "0.1", "reward must be"),
])
def test_invalid_update_raises_naming_arm_or_reward(name, arm, reward, culprit):
    policy = make_policy(name, 3, 0, **OPTIONS.get(name, {}))
    before = policy.state_dict()
    with pytest.raises(ValueError, match=culprit):
        policy.update(arm, reward)
    assert policy.state_dict() == before, "a rejected update must leave the policy unchanged"


def test_single_arm_is_allowed():
    policy = make_policy("optima", 1, 0)
    assert play(policy, rewards_for(rounds=5, n_arms=1)) == [0] * 5


# ---------------------------------------------------------------------- arms
def test_make_arms():
    modules = ("vision", "text", "multimodal")
    assert make_arms(modules, "modules") == [("vision",), ("text",), ("multimodal",)]
    subsets = make_arms(modules, "subsets")
    assert subsets == [("vision",), ("text",), ("multimodal",), ("vision", "text"), ("vision", "multimodal"),
                       ("text", "multimodal"), ("vision", "text", "multimodal")]
    assert len(make_arms(["a", "b", "c", "d"], "subsets")) == 15
    with pytest.raises(ConfigError, match="distinct"):
        make_arms(["vision", "vision"], "modules")
    with pytest.raises(ConfigError, match="'pairs'"):
        make_arms(modules, "pairs")
    with pytest.raises(ConfigError, match="no modules"):
        make_arms([], "modules")


def test_numpy_integers_are_accepted_and_state_stays_plain_json():
    policy = make_policy("fixed", 3, np.int64(4), arm=np.int64(1))
    policy.update(np.int64(1), np.float32(0.5))
    restored = make_policy("fixed", 3, 0, arm=1)
    restored.load_state_dict(json.loads(json.dumps(policy.state_dict())))
    assert restored.select() == 1 and restored.rounds == 1
