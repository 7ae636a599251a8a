"""Train, evaluate and publish scikit-learn models into modelrun's versioned store."""
