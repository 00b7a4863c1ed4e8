"""SD's discrete schedule on vdiff's log-SNR core: table parity with diffusers, inverse map."""

import numpy as np
import pytest

from vdiff.models.sd.latent_diffusion import DiscreteSchedule, scaled_linear_betas


def test_logsnr_table_matches_diffusers_alphas_cumprod():
    pytest.importorskip("torch")  # the [parity] extra; diffusers' schedulers need torch
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                    beta_end=0.012, num_train_timesteps=1000)
    ac = sched.alphas_cumprod.double().numpy()
    ours = DiscreteSchedule.from_scheduler_config(dict(sched.config))
    np.testing.assert_allclose(ours.logsnr_table, np.log(ac / (1 - ac)), atol=1e-4)


def test_timestep_is_the_inverse_of_the_continuous_schedule():
    s = DiscreteSchedule.from_betas(scaled_linear_betas())
    steps = np.array([0.0, 1.0, 17.5, 500.0, 998.25, 999.0])
    t = s.t_of_timestep(steps)
    np.testing.assert_allclose(s.timestep(s.logsnr(t)), steps, atol=2e-3)
    lam = s.logsnr(np.linspace(0, 1, 101))
    assert np.all(np.diff(np.asarray(lam)) <= 0)  # noise grows with t
