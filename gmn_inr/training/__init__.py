"""Training the GMN encoder end to end, in four modules: :mod:`.config` (TrainConfig, schedule,
seeds), :mod:`.model` (GMNModel, load_model), :mod:`.loop` (train, evaluate) and :mod:`.cli`
(``gmn-inr train``). :mod:`gmn_inr.train` re-exports the public names."""
