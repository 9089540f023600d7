# A linear model's mean absolute error: examples/mean_absolute_error.py in the DSL.
#   coeffs [0.5, 0.5], inputs [[1, 2], [3, 4]], targets [5, 6] -> loss 3.0, gradient [-2, -3]
def mae(params: f64[2], inputs: f64[N, 2], targets: f64[N]):
    preds = sum(inputs * params, axis=1)
    return mean(abs(preds - targets))
