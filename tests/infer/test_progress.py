"""The progress line: shown where someone watches (a terminal), silent when output is a file or pipe."""
import io

import numpy as np

from claygraph.infer.chains import Chain
from claygraph.infer.progress import ChainProgress, OptimProgress, interactive


class Tty(io.StringIO):
    def isatty(self):
        return True


def _pool(n):
    out = []
    for i in range(2):
        c = Chain(i, np.zeros(2, np.uint32), params={"step_size": np.float32(0.25 + i / 10)})
        c.draws.append({"x": np.zeros(n)})
        c.stats.append({"diverging": np.arange(n) < i})
        out.append(c)
    return out


def test_chain_progress_shows_draws_divergences_step_sizes_and_eta_on_a_terminal():
    tty = Tty()
    bar = ChainProgress(draws=200, stream=tty)
    bar.warmup(2, 100)
    bar.update(_pool(50))
    bar.update(_pool(100))
    bar.close()
    last = tty.getvalue().split("\r")[-1]
    assert "draws per chain 100/200" in last and "divergences 1" in last and "0.25, 0.35" in last
    assert "left" in last and tty.getvalue().endswith("\n")


def test_silent_when_not_interactive_unless_asked():
    pipe = io.StringIO()
    assert not interactive(pipe)
    bar = ChainProgress(draws=10, stream=pipe)
    bar.warmup(2, 10)
    bar.update(_pool(5))
    bar.close()
    assert pipe.getvalue() == ""
    forced = io.StringIO()
    opt = OptimProgress("MAP (L-BFGS)", show=True, stream=forced, every_s=0.0)
    opt.update(7, 123.5, 0.01)
    assert "iteration 7 | objective 123.5 | grad norm 0.01" in forced.getvalue()
