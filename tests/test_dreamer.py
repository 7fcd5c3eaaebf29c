"""DreamerV3 core: distributions, KL balancing, returns, return normaliser, RSSM unrolls, and a tiny learning run."""

import math

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from agents.dreamer import Agent, DreamerConfig, Trainer
from agents.dreamer.behaviour import ReturnNormaliser, lambda_returns
from agents.dreamer.distributions import NUM_BINS, bins, symexp, symlog, two_hot, two_hot_loss, two_hot_mean
from agents.dreamer.rssm import RSSM
from agents.dreamer.world_model import kl_losses


def test_symlog_symexp_round_trip():
    x = torch.tensor([-1e4, -3.5, -1.0, 0.0, 0.2, 1.0, 42.0, 1e4])
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-5)
    assert symlog(torch.tensor(math.e - 1)).item() == pytest.approx(1.0)


def test_two_hot_round_trip():
    x = torch.tensor([-2000.0, -7.3, -1.0, 0.0, 0.01, 0.5, 3.0, 123.4, 2000.0])
    weights = two_hot(symlog(x))
    assert weights.shape == (9, NUM_BINS)
    assert torch.allclose(weights.sum(-1), torch.ones(9))
    assert ((weights > 0).sum(-1) <= 2).all()
    assert torch.allclose(symexp((weights * bins()).sum(-1)), x, rtol=1e-4, atol=1e-5)
    # Logits that put the two-hot weights on the bins read out the same value, and it minimises the loss.
    logits = torch.log(weights + 1e-12)
    assert torch.allclose(two_hot_mean(logits), x, rtol=1e-3, atol=1e-4)
    assert (two_hot_loss(logits, x) <= two_hot_loss(torch.zeros_like(logits), x)).all()


def _logits(*probs):  # one categorical per argument -> logits [1, S, C]
    return torch.tensor(probs).log().unsqueeze(0).requires_grad_()


def test_kl_balancing_and_free_bits():
    # Two latents, each KL(p || q) = 0.99 ln 99 + 0.01 ln(1/99): far above one nat in total.
    post, prior = _logits([0.99, 0.01], [0.99, 0.01]), _logits([0.01, 0.99], [0.01, 0.99])
    kl = 2 * (0.99 * math.log(99) + 0.01 * math.log(1 / 99))
    dyn, rep = kl_losses(post, prior)
    assert dyn.item() == pytest.approx(kl, rel=1e-5) and rep.item() == pytest.approx(kl, rel=1e-5)
    (0.5 * dyn + 0.1 * rep).sum().backward()
    # Each term trains only one side: dynamics the prior, representation the posterior, each with its own scale.
    ref_post, ref_prior = post.detach().clone().requires_grad_(), prior.detach().clone().requires_grad_()
    full = (ref_post.softmax(-1) * (ref_post.log_softmax(-1) - ref_prior.log_softmax(-1))).sum()
    grad_post, grad_prior = torch.autograd.grad(full, (ref_post, ref_prior))
    assert torch.allclose(post.grad, 0.1 * grad_post, atol=1e-6)
    assert torch.allclose(prior.grad, 0.5 * grad_prior, atol=1e-6)

    # One latent with KL = 0.9 ln 1.8 + 0.1 ln 0.2 ~ 0.37 nats: clipped to the 1-nat floor, no gradient.
    post, prior = _logits([0.9, 0.1]), _logits([0.5, 0.5])
    dyn, rep = kl_losses(post, prior)
    assert dyn.item() == 1.0 and rep.item() == 1.0
    (dyn + rep).sum().backward()
    assert (post.grad == 0).all() and (prior.grad == 0).all()


def test_lambda_returns_by_hand():
    reward = torch.tensor([[1.0], [2.0]])
    cont = torch.tensor([[1.0], [0.0]])  # the episode ends after the second action
    value = torch.tensor([[0.5], [1.0], [3.0]])
    # R1 = 2 + 0.5 * 0 * (...) = 2;  R0 = 1 + 0.5 * 1 * (0.5 * v1 + 0.5 * R1) = 1 + 0.5 * 1.5 = 1.75
    returns = lambda_returns(reward, cont, value, gamma=0.5, lam=0.5)
    assert torch.allclose(returns, torch.tensor([[1.75], [2.0]]))


def test_return_normaliser_percentile_ema():
    norm = ReturnNormaliser(decay=0.99)
    returns = torch.arange(101.0)  # 5th percentile 5, 95th percentile 95
    norm.update(returns)
    assert torch.allclose(norm.ema, torch.tensor([0.05, 0.95]))
    assert norm.scale.item() == 1.0  # range 0.9 is below the floor of 1
    norm.update(returns)
    expected = 0.99 * torch.tensor([0.05, 0.95]) + 0.01 * torch.tensor([5.0, 95.0])
    assert torch.allclose(norm.ema, expected)
    assert norm.scale.item() == pytest.approx(float(expected[1] - expected[0]))


@pytest.mark.parametrize("name,config", [("gru", {}), ("lstm", {}), ("transformer", {"width": 32, "window": 8})])
def test_rssm_observe_and_imagine_shapes(name, config):
    torch.manual_seed(0)
    T, B, E, A, H = 5, 3, 7, 4, 6
    rssm = RSSM(E, A, deter=16, units=16, stoch=4, classes=5, memory_name=name, memory_config=config)
    embed = torch.randn(T, B, E)
    action = torch.nn.functional.one_hot(torch.randint(A, (T, B)), A).float()
    reset = torch.zeros(T, B, dtype=torch.bool)
    reset[0] = True
    reset[3, 1] = True
    states, post, prior, last = rssm.observe(embed, action, reset, rssm.initial_state(B))
    assert post.shape == prior.shape == (T, B, 4, 5)
    assert states["deter"].shape == (T, B, rssm.deter) and states["stoch"].shape == (T, B, 20)
    assert set(states) == set(last) and all(v.shape[:2] == (T, B) for v in states.values())
    assert ((states["stoch"].view(T, B, 4, 5).sum(-1) - 1).abs() < 1e-5).all()  # one-hot latents
    assert post.exp().min() >= 0.01 / 5 - 1e-6  # unimix keeps every class possible

    start = {k: v.reshape(T * B, *v.shape[2:]) for k, v in states.items()}
    policy = lambda feat: torch.nn.functional.one_hot(torch.randint(A, feat.shape[:1]), A).float()  # noqa: E731
    feat, actions = rssm.imagine(start, policy, H)
    assert feat.shape == (H + 1, T * B, rssm.feature_size) and actions.shape == (H, T * B, A)
    assert torch.equal(feat[0], rssm.features(start))


def test_observe_resets_forget_the_earlier_episode():
    torch.manual_seed(0)
    rssm = RSSM(3, 2, deter=8, units=8, stoch=2, classes=3, memory_name="lstm")
    embed, action = torch.randn(6, 1, 3), torch.ones(6, 1, 2) / 2
    reset = torch.zeros(6, 1, dtype=torch.bool)
    reset[0] = reset[3] = True
    outs = []
    for scale in (1.0, -5.0):
        changed = embed.clone()
        changed[:3] *= scale  # perturb only the first episode
        torch.manual_seed(1)  # same latent draws
        outs.append(rssm.observe(changed, action, reset, rssm.initial_state(1))[0]["deter"])
    assert not torch.allclose(outs[0][:3], outs[1][:3])
    assert torch.allclose(outs[0][3:], outs[1][3:])


def test_train_step_on_images_with_lstm_memory():
    torch.manual_seed(0)
    obs_space = gymnasium.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    cfg = DreamerConfig(size="tiny", memory="lstm", stoch=4, classes=4, batch_size=2, batch_length=4, horizon=3)
    agent = Agent(obs_space, gymnasium.spaces.Discrete(3), cfg)
    B, T = 2, 4
    batch = {"obs": torch.randint(0, 256, (B, T, 16, 16, 3), dtype=torch.uint8),
             "action": torch.randint(3, (B, T)), "reward": torch.randn(B, T),
             "terminated": torch.zeros(B, T, dtype=torch.bool), "reset": torch.zeros(B, T, dtype=torch.bool)}
    before = {name: p.clone() for name, p in agent.named_parameters()}
    metrics = agent.train_step(batch)
    assert all(math.isfinite(v) for v in metrics.values())
    # Every part learns; zero-initialised outputs (reward, critic) and the prior below free bits may start still.
    changed = {name.split(".")[1] for name, p in agent.named_parameters() if not torch.equal(p, before[name])}
    assert {"encoder", "decoder", "rssm", "cont_head", "actor", "critic"} <= changed
    action, state = agent.act(batch["obs"][:, 0], agent.initial_state(B), torch.ones(B, dtype=torch.bool))
    assert action.shape == (B,) and {"memory.h", "memory.c"} <= set(state)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="agent.size"):
        DreamerConfig(size="XXL")
    box = gymnasium.spaces.Box(0, 1, (3,), np.float32)
    with pytest.raises(ValueError, match="Discrete"):
        Agent(box, gymnasium.spaces.Box(-1, 1, (2,)), DreamerConfig(size="tiny"))
    with pytest.raises(ValueError, match="memory.name"):
        RSSM(3, 2, memory_name="nope")


class CueBandit(gymnasium.Env):
    """One-step episodes: the observation shows a cue (one of two); action 1 + cue pays +1, any other -1."""

    observation_space = gymnasium.spaces.Box(0.0, 1.0, (2,), np.float32)
    action_space = gymnasium.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cue = int(self.np_random.integers(2))
        return np.eye(2, dtype=np.float32)[self.cue], {}

    def step(self, action):
        reward = 1.0 if action == 1 + self.cue else -1.0
        return np.zeros(2, np.float32), reward, True, False, {}


def _average_return(env, agent, episodes):
    obs, _ = env.reset(seed=123)
    state, reset = agent.initial_state(env.num_envs), torch.ones(env.num_envs, dtype=torch.bool)
    running, returns = torch.zeros(env.num_envs), []
    while len(returns) < episodes:
        action, state = agent.act(obs, state, reset)
        obs, reward, terminated, truncated, _ = env.step(action.numpy())
        reset = torch.as_tensor(terminated | truncated)
        running += torch.as_tensor(reward).float()
        returns += running[reset].tolist()
        running[reset] = 0.0
    return float(np.mean(returns[:episodes]))


def test_tiny_dreamer_learns_a_cue_bandit():
    torch.manual_seed(0)
    env = SyncVectorEnv([CueBandit for _ in range(8)], autoreset_mode=AutoresetMode.SAME_STEP)
    # Faster learning rates than the recipe's, so that a few dozen updates show progress on a CPU.
    cfg = DreamerConfig(size="tiny", stoch=8, classes=8, batch_size=8, batch_length=8, lr=3e-3, ac_lr=1e-3,
                        num_envs=8, collect_steps=8, total_steps=960, train_ratio=16, replay_capacity=4096,
                        chunk_length=8)
    agent = Agent(env.single_observation_space, env.single_action_space, cfg)
    before = _average_return(env, agent, 200)
    trainer = Trainer(env, agent, cfg, torch.device("cpu"))
    metrics = [trainer.iterate() for _ in range(trainer.num_iterations)]
    after = _average_return(env, agent, 200)
    assert trainer.global_step == 960 and trainer.updates > 0
    assert all(math.isfinite(v) for v in metrics[-1].values())
    assert before < -0.2 and after > before + 0.8


def test_trainer_spends_the_train_ratio():
    # 4 envs x 8 steps per iteration, chunks of 8: the replay first holds data after the first iteration's last
    # step, which earns 4 x 16 = 64 replayed steps = 2 updates of 4 x 8; each later iteration earns 32 x 16 = 16.
    env = SyncVectorEnv([CueBandit for _ in range(4)], autoreset_mode=AutoresetMode.SAME_STEP)
    cfg = DreamerConfig(size="tiny", stoch=2, classes=2, batch_size=4, batch_length=8, horizon=2, num_envs=4,
                        collect_steps=8, train_ratio=16, replay_capacity=256, chunk_length=8)
    trainer = Trainer(env, Agent(env.single_observation_space, env.single_action_space, cfg), cfg,
                      torch.device("cpu"))
    first, second = trainer.iterate(), trainer.iterate()
    assert (first["updates"], second["updates"]) == (2, 16)
    assert first["episodes"] == 0  # SyncVectorEnv without episode statistics: none reported
    assert trainer.replay.stored_steps == 2 * 32 and trainer.budget == 0


def test_trainer_refuses_next_step_autoreset():
    env = SyncVectorEnv([CueBandit], autoreset_mode=AutoresetMode.NEXT_STEP)
    cfg = DreamerConfig(size="tiny", num_envs=1)
    agent = Agent(env.single_observation_space, env.single_action_space, cfg)
    with pytest.raises(ValueError, match="SAME_STEP"):
        Trainer(env, agent, cfg, torch.device("cpu"))


@pytest.mark.parametrize("field,value,message", [
    ("replay", "lifo", "agent.replay: unknown replay 'lifo'; accepted: fifo, reservoir, wmar"),
    ("chunk_length", 8, r"agent.chunk_length \(8\) must be >= agent.batch_length \(64\)"),
    ("train_ratio", 0.0, "agent.train_ratio must be positive"),
    ("collect_steps", 0, "agent.collect_steps must be a positive integer"),
])
def test_bad_trainer_fields_raise(field, value, message):
    with pytest.raises(ValueError, match=message):
        DreamerConfig(**{field: value})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graph_replayed_updates_equal_eager_updates():
    obs_space = gymnasium.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    B, T = 2, 4
    batches = [{"obs": torch.randint(0, 256, (B, T, 16, 16, 3), dtype=torch.uint8),
                "action": torch.randint(3, (B, T)), "reward": torch.randn(B, T),
                "terminated": torch.zeros(B, T, dtype=torch.bool), "reset": torch.zeros(B, T, dtype=torch.bool)}
               for _ in range(6)]
    runs = []
    for graph in (False, True):
        torch.manual_seed(0)
        cfg = DreamerConfig(size="tiny", stoch=4, classes=4, batch_size=B, batch_length=T, horizon=3,
                            cuda_graph=graph)
        agent = Agent(obs_space, gymnasium.spaces.Discrete(3), cfg).cuda()
        losses = []
        for i, batch in enumerate(batches):  # 3 eager updates, then capture + replay, then replays
            torch.cuda.manual_seed(i)  # a replay draws from the generator's state at replay time, as eager does
            losses.append(float(agent.train_step(batch)["model_loss"]))
        runs.append((agent, losses))
    (eager, eager_losses), (graphed, graph_losses) = runs
    assert graphed.graph is not None and eager.graph is None
    np.testing.assert_allclose(graph_losses, eager_losses, rtol=1e-4)
    for p, q in zip(eager.parameters(), graphed.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-5)
