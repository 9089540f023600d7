# Logistic regression: the mean binary cross-entropy of a linear model's logits.

def logits(w: f64[4], b: f64[], X: f64[N, 4]):
    return X @ w + b

def loss(w: f64[4], b: f64[], X: f64[N, 4], y: f64[N]):
    z = logits(w, b, X)
    # -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))], in the form that never overflows
    per_sample = maximum(z, 0) - z * y + log1p(exp(-abs(z)))
    return mean(per_sample)
