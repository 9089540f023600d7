import numpy as np, time, torch
torch.set_num_threads(2)
import examples.convolution as ex
r = ex.main()
w, signals, targets, kernel, images = r["inputs"]
def bench(fn, n=200):
    fn(); t=time.perf_counter()
    for _ in range(n): fn()
    return (time.perf_counter()-t)/n*1e6
g = bench(lambda: ex.conv2d_loss.value_and_grad(kernel, images))
ti = torch.tensor(images[:, None]); 
def tstep():
    tk = torch.tensor(kernel[None, None], requires_grad=True)
    out = torch.nn.functional.conv2d(ti, tk)
    loss = (torch.tanh(out) ** 2).mean(); loss.backward(); return loss.item(), tk.grad
tl, tg = tstep()
print("2-D loss", r["conv2d"][0], tl, "grad diff", np.abs(tg.numpy()[0,0] - r["conv2d"][1]).max())
t = bench(tstep)
print(f"conv2d value_and_grad: gradfuse {g:.1f} us, torch eager {t:.1f} us")
g1 = bench(lambda: ex.conv1d_loss.value_and_grad(w, signals, targets))
ts = torch.tensor(signals[:, None]); tt = torch.tensor(targets[:, None])
def t1():
    tw = torch.tensor(w[None, None], requires_grad=True)
    loss = ((torch.nn.functional.conv1d(ts, tw) - tt) ** 2).mean(); loss.backward(); return loss.item(), tw.grad
l, gg = t1(); print("1-D", r["conv1d"][0], l, np.abs(gg.numpy()[0,0]-r["conv1d"][1]).max())
print(f"conv1d value_and_grad: gradfuse {g1:.1f} us, torch eager {bench(t1):.1f} us")
