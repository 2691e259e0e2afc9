"""Ray actors that host renderers, and the pool that batches, retries and restarts them.

Workers are stateless environments from mesh parameters to rewards: only the learner holds
weights. Imports Ray and ``envs``; never the model.
"""
