"""Study: the code behind every experiment — comparisons, evaluations, plan searches, verdicts and their tables."""
