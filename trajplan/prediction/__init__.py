"""Long-horizon prediction (the paper's Figure 3): a TT model and a PETS-style ensemble rolled
out open-loop from held-out states on the data's actions, scored against the simulator.

    heldout       the held-out episodes (TT's validation split) and the start states
    open_loop     the harness: any `Predictor` rolled out, the simulator replay, the scores
    tt            the TT model as a Predictor (the data's action tokens in, the rest sampled)
    ensemble      the ensemble's training and its run directories (the networks, loading
                  a run and the ensemble as a Predictor: `trajplan.runs.ensemble`)
    report        `trajplan predict`: everything checked, rolled out, scored, written
"""
