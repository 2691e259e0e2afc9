"""Ray actors that host renderers, and the pool that batches, retries and restarts them.

Workers are stateless environments from mesh parameters to rewards: only the learner holds
weights. Imports Ray and ``envs``; never the model.

``contract`` (what any pool offers the learner), ``pool`` (the Ray pool), ``local`` (the
in-process pool), ``worker`` (the actor), ``cluster`` (starting or joining Ray), ``placement``
(where workers go, how many fit), ``devices`` (which EGL device is Ray's GPU), ``standin`` (a
sleeping stand-in environment for benchmarks and tests).
"""
