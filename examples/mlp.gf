# two-layer MLP with mean squared error
def loss(W1: f32[10, 5], b1: f32[5], W2: f32[5, 1], b2: f32[1], X: f32[N, 10], y: f32[N, 1]):
    h = relu(X @ W1 + b1)
    pred = h @ W2 + b2
    return mean((pred - y) ** 2)
