"""transferscope.theory: transfer in solvable models (Tahir, Ganguli, Rotskoff, arXiv 2410.08194).

linear    closed-form risks and transferability for linear regression transfer, phase boundaries
simulate  deep linear networks trained by batched gradient descent (scratch, readout, fine-tune)
phase     phase diagrams over (θ, γ): theory, simulation, difference; figures
relu      two-layer ReLU student–teacher transfer against the feature-overlap prediction
overlap   feature_overlap: the share of a target a ridge readout on frozen features cannot explain
report    run_theory(params, out_dir): the entry point of the theory stage
"""
