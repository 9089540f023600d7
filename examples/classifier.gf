# A softmax classifier with a tanh hidden layer and L2 weight decay.
# Functions call each other; one returns two values; labels are class indices.

def dense(x, W, b):
    return x @ W + b

def forward(W1: f32[4, 8], b1: f32[8], W2: f32[8, 3], b2: f32[3], X: f32[N, 4]):
    h = tanh(dense(X, W1, b1))
    logits = dense(h, W2, b2)
    penalty = sum(W1 ** 2) + sum(W2 ** 2)
    return logits, penalty

def loss(W1: f32[4, 8], b1: f32[8], W2: f32[8, 3], b2: f32[3], X: f32[N, 4], labels: i64[N]):
    logits, penalty = forward(W1, b1, W2, b2, X)
    data_loss = cross_entropy(logits, labels, reduction="mean")
    return data_loss + 1e-3 * penalty
