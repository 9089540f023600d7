# A chain of 8 unit masses joined by springs, simulated for 100 explicit Euler steps.
# The loss asks the chain to end at rest at `target`; its gradient with respect to the
# initial velocity v0 says how to launch the chain to get there. The loop is one `scan`
# in the IR and one `for` loop in the generated code, forward and backward.

def spring_force(x, k):
    # each spring pulls its two neighbours together; the ends of the chain are free
    return k * concatenate([x[1:2] - x[:1], x[2:] - 2 * x[1:-1] + x[:-2], x[-2:-1] - x[-1:]])

def loss(v0: f64[8], x0: f64[8], target: f64[8]):
    k = 4.0           # spring stiffness
    damping = 0.2
    dt = 0.02
    x = x0
    v = v0
    for step in range(100):
        a = spring_force(x, k) - damping * v
        x = x + dt * v
        v = v + dt * a
    return sum((x - target) ** 2) + sum(v * v)
