"""The AdaEnsemble model, split by role: gate, schedule, dispatcher, regularisers,
SparseMoE layer, estimator, controller, and the model that stacks them."""
