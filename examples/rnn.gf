# An Elman RNN reads a sequence one row at a time (T rows: any length, one kernel); a
# linear read-out of its last state is compared with a target.

def loss(W: f32[4, 8], U: f32[8, 8], b: f32[8], h0: f32[8], V: f32[8, 2], xs: f32[T, 4],
         y: f32[2]):
    h = h0
    for x in xs:
        h = tanh(x @ W + h @ U + b)
    return mean((h @ V - y) ** 2)
